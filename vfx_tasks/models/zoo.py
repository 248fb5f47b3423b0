"""The mmaction2 model zoo, read from the ``metafile.yml`` files its 1.2.0 wheel ships.

Listing is cheap on purpose: it reads the 22 small metafiles (names, config files, weight URLs,
parameter counts) and nothing else: no torch, no mmaction2, no config parsed. A model's config is
parsed only when that model is asked for (:func:`vfx_tasks.models.get_model_spec`), and then only
its own file and its ``_base_`` files.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from vfx_tasks.errors import DependencyError
from vfx_tasks.models._mmaction_compat import zoo_config_file, zoo_weights_url

#: Short names for popular zoo models, beside the seeds' own aliases (``i3d``, ``swin-t``...).
ZOO_ALIASES: dict[str, str] = {
    "c3d": "c3d_sports1m-pretrained_8xb30-16x1x1-45e_ucf101-rgb",
    "csn": "ircsn_ig65m-pretrained-r152_8xb12-32x2x1-58e_kinetics400-rgb",
    "mvit-s": "mvit-small-p244_32xb16-16x4x1-200e_kinetics400-rgb",
    "mvit-b": "mvit-base-p244_32x3x1_kinetics400-rgb",
    "r2plus1d": "r2plus1d_r34_8xb8-32x2x1-180e_kinetics400-rgb",
    "slowfast": "slowfast_r50_8xb8-8x8x1-256e_kinetics400-rgb",
    "slowfast-r50": "slowfast_r50_8xb8-8x8x1-256e_kinetics400-rgb",
    "slowonly": "slowonly_r50_8xb16-8x8x1-256e_kinetics400-rgb",
    "slowonly-r50": "slowonly_r50_8xb16-8x8x1-256e_kinetics400-rgb",
    "swin-s": "swin-small-p244-w877_in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb",
    "swin-b": "swin-base-p244-w877_in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb",
    "timesformer": "timesformer_divST_8xb8-8x32x1-15e_kinetics400-rgb",
    "tsm": "tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb",
    "tsm-r50": "tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb",
    "tsn": "tsn_imagenet-pretrained-r50_8xb32-1x1x8-100e_kinetics400-rgb",
    "tsn-r50": "tsn_imagenet-pretrained-r50_8xb32-1x1x8-100e_kinetics400-rgb",
    "uniformer-s": "uniformer-small_imagenet1k-pre_16x4x1_kinetics400-rgb",
    "uniformerv2-b": "uniformerv2-base-p16-res224_clip-kinetics710-pre_8xb32-u8_kinetics400-rgb",
    "videomae": "vit-base-p16_videomae-k400-pre_16x4x1_kinetics-400",
    "videomae-b": "vit-base-p16_videomae-k400-pre_16x4x1_kinetics-400",
    "videomaev2-s": "vit-small-p16_videomaev2-vit-g-dist-k710-pre_16x4x1_kinetics-400",
    "videomaev2-b": "vit-base-p16_videomaev2-vit-g-dist-k710-pre_16x4x1_kinetics-400",
    "x3d": "x3d_s_13x6x1_facebook-kinetics400-rgb",
    "x3d-s": "x3d_s_13x6x1_facebook-kinetics400-rgb",
    "x3d-m": "x3d_m_16x5x1_facebook-kinetics400-rgb",
}


@dataclass(frozen=True)
class ZooEntry:
    """One model of mmaction2's model zoo, as its metafile lists it.

    Attributes:
        name: The model-zoo name (the metafile's ``Name``).
        family: Its folder under ``configs/recognition`` (``i3d``, ``tsm``...).
        config_file: The config file in the installed wheel (``None``: the wheel lacks it).
        weights_url: Where the trained checkpoint is downloaded from.
        parameters: Parameter count the metafile gives (``None`` if it gives none).
    """

    name: str
    family: str
    config_file: Path | None
    weights_url: str
    parameters: int | None = None

    @property
    def config_name(self) -> str:
        """``configs/recognition/<family>/<file>``, the name a manifest records."""
        file_name = self.config_file.name if self.config_file else f"{self.name}.py"
        return f"configs/recognition/{self.family}/{file_name}"

    @property
    def approx_checkpoint_bytes(self) -> int | None:
        """About 4 bytes per float32 parameter (the metafiles give no file sizes)."""
        return None if self.parameters is None else 4 * self.parameters


def configs_root() -> Path:
    """``mmaction/.mim`` in the installed wheel, found without importing mmaction2."""
    spec = importlib.util.find_spec("mmaction")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError("mmaction2 is not installed; run `pip install mmaction2==1.2.0`.")
    return Path(list(spec.submodule_search_locations)[0]) / ".mim"


def _parameter_count(value: object) -> int | None:
    """``3794322`` or ``'24.33M'`` (as metafiles write it) as an integer."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMG]?)\s*", str(value))
    if not match:
        return None
    scale = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}[match.group(2)]
    return round(float(match.group(1)) * scale)


@functools.cache
def zoo_entries() -> dict[str, ZooEntry]:
    """Every recognizer of the wheel's model zoo, by name, families in alphabetical order."""
    import yaml

    root = configs_root()
    entries: dict[str, ZooEntry] = {}
    for metafile in sorted((root / "configs" / "recognition").glob("*/metafile.yml")):
        family = metafile.parent.name
        with open(metafile, encoding="utf-8") as f:
            metadata = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        for model in metadata.get("Models", []):
            if not model.get("Weights"):
                continue
            entries.setdefault(model["Name"], ZooEntry(
                name=model["Name"],
                family=family,
                config_file=zoo_config_file(root, family, model["Name"], model.get("Config", "")),
                weights_url=zoo_weights_url(model["Weights"]),
                parameters=_parameter_count((model.get("Metadata") or {}).get("Parameters")),
            ))
    return entries


def zoo_families() -> list[str]:
    """The recognizer families of the model zoo (folders with a metafile)."""
    return sorted({entry.family for entry in zoo_entries().values()})


def find_zoo_entry(name: str) -> ZooEntry | None:
    """The zoo entry called ``name`` or aliased by it, or ``None``."""
    entries = zoo_entries()
    return entries.get(ZOO_ALIASES.get(name, name))
