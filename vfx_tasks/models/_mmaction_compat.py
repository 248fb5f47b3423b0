"""The single place that papers over packaging defects of the mmaction2 1.2.0 wheel.

Problems of the wheel, all upstream, all handled here and nowhere else:

1. The wheel on PyPI lacks ``mmaction/models/localizers/drn/`` (open-mmlab/mmaction2 issue
   2714), yet ``mmaction/models/localizers/__init__.py`` imports ``.drn.drn.DRN``. Importing any
   backbone therefore fails with ``ModuleNotFoundError``. We register an empty stand-in module
   with a ``DRN`` placeholder before mmaction is imported; the DRN localizer is never used here.
2. ``mmaction.utils.dependency`` imports the third-party ``importlib_metadata`` backport, which
   the wheel does not declare. The project depends on it; if it is still missing we alias the
   standard library's ``importlib.metadata``, which offers the same two names mmaction uses.
3. mmengine 0.10.7's checkpoint loader calls ``torch.load`` without ``weights_only``, which
   torch >= 2.6 refuses for OpenMMLab checkpoints (open-mmlab/mmengine issue 1655). We never
   call it: :mod:`vfx_tasks.models.checkpoint` loads state dicts itself.
4. Some ``metafile.yml`` entries name their config wrongly: without ``.py``, with ``.py.py``, a
   file the wheel lacks, or another model's config (MViT's Something-Something entry points at
   the Kinetics config). :func:`zoo_config_file` finds the file the entry means;
   :func:`zoo_weights_url` drops the bracket before one weights URL.
5. Two backbones cannot run with this wheel: TIN needs ``mmcv.ops.tin_shift``, a compiled op
   that mmcv-lite lacks and that full mmcv implements for CUDA only; MobileOne-TSM is built from
   mmpretrain, which mmaction2 does not install (and whose mmcv requirement clashes with
   mmcv-lite). :func:`unsupported_backbone_reason` says so before anything is built.

Call :func:`import_mmaction_backbones` or :func:`build_mmaction_module` instead of importing
mmaction directly.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Any

from vfx_tasks.errors import DependencyError

_DRN_MODULES = ("mmaction.models.localizers.drn", "mmaction.models.localizers.drn.drn")


class _MissingDRN:
    """Placeholder for the localizer that the mmaction2 1.2.0 wheel forgot to ship."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise DependencyError(
            "mmaction2's DRN localizer is missing from the 1.2.0 wheel and is not used by vfx_tasks."
        )


def _install_drn_stand_in() -> None:
    spec = importlib.util.find_spec("mmaction")
    if spec is None or not spec.submodule_search_locations:
        return
    # Look on disk: find_spec() on the submodule would import the broken parent package.
    if any(os.path.isdir(os.path.join(loc, "models", "localizers", "drn"))
           for loc in spec.submodule_search_locations):
        return  # a fixed wheel (or a source install) ships the real module
    package = types.ModuleType(_DRN_MODULES[0])
    package.__path__ = []  # mark as a package so the submodule import resolves
    module = types.ModuleType(_DRN_MODULES[1])
    module.DRN = _MissingDRN  # type: ignore[attr-defined]
    package.drn = module  # type: ignore[attr-defined]
    sys.modules.setdefault(_DRN_MODULES[0], package)
    sys.modules.setdefault(_DRN_MODULES[1], module)


def _ensure_importlib_metadata() -> None:
    if importlib.util.find_spec("importlib_metadata") is None:
        sys.modules.setdefault("importlib_metadata", importlib.metadata)


def import_mmaction_backbones() -> types.ModuleType:
    """Import and return ``mmaction.models.backbones`` with the wheel's defects patched."""
    if "mmaction.models.backbones" in sys.modules:
        return sys.modules["mmaction.models.backbones"]
    _ensure_importlib_metadata()
    _install_drn_stand_in()
    with warnings.catch_warnings():
        # mmcv-lite lacks compiled ops that no backbone here uses; mmcv warns on import.
        warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention.*")
        return importlib.import_module("mmaction.models.backbones")


def build_mmaction_module(config: dict[str, Any]) -> Any:
    """Build a registered mmaction2 module (recognizer, backbone, neck) from its config dict.

    Every mmaction2 model module is registered first, in mmaction2's default scope, so that a
    config names its parts as mmaction2's own tools resolve them.
    """
    import_mmaction_backbones()
    importlib.import_module("mmaction.models")
    from mmaction.registry import MODELS
    from mmengine.registry import DefaultScope

    if DefaultScope.get_current_instance() is None:
        DefaultScope.get_instance("vfx_tasks", scope_name="mmaction")
    return MODELS.build(config)


_METAFILE_CONFIG_TYPOS = (".py.py", ".py")


def zoo_weights_url(written: str) -> str:
    """A metafile's ``Weights`` URL without the stray bracket one entry has (TPN-TSM: ``(https://``)."""
    return written.strip().strip("()[]<>")


def zoo_config_file(root: Path, family: str, name: str, config: str) -> Path | None:
    """The config file a metafile entry means, or ``None`` if the wheel lacks it.

    A file named after the entry in its family's folder wins (the MViT entry whose ``Config``
    names the Kinetics file while its weights are for Something-Something); then the ``Config``
    path as written, with ``.py`` added or a doubled ``.py.py`` removed.
    """
    own = root / "configs" / "recognition" / family / f"{name}.py"
    if own.is_file():
        return own
    written = root / config
    candidates = [written, Path(str(written).removesuffix(".py.py") + ".py"), Path(f"{written}.py")]
    return next((path for path in candidates if path.is_file() and path.suffix == ".py"), None)


def _has_compiled_mmcv_ops() -> bool:
    """Whether the installed mmcv ships its compiled ops (looked up on disk: importing mmcv loads torch)."""
    spec = importlib.util.find_spec("mmcv")
    locations = spec.submodule_search_locations or () if spec is not None else ()
    return any(any(Path(location).glob("_ext*")) for location in locations)


def unsupported_backbone_reason(backbone_type: str) -> str | None:
    """Why this wheel set cannot run ``backbone_type`` here, or ``None`` if it can."""
    if backbone_type == "ResNetTIN" and not _has_compiled_mmcv_ops():
        return (
            "TIN's temporal interlacing calls mmcv.ops.tin_shift, a compiled op that mmcv-lite "
            "does not ship and that full mmcv implements for CUDA only"
        )
    if backbone_type == "MobileOneTSM" and importlib.util.find_spec("mmpretrain") is None:
        return (
            "MobileOne-TSM is built from mmpretrain's MobileOne, and mmpretrain is not installed "
            "(mmaction2 does not require it, and it needs the full mmcv build, not mmcv-lite)"
        )
    if "." in backbone_type:  # borrowed from another library: torchvision.*, timm.*, mmpretrain.*
        library = backbone_type.split(".", 1)[0]
        missing = importlib.util.find_spec(library) is None
        return (
            f"its backbone {backbone_type} comes from {library}"
            f"{' (not installed)' if missing else ''}; vfx_tasks builds mmaction2's own backbones only "
            "(mmaction2 wraps borrowed ones in its recognizer, with their own feature layouts)"
        )
    return None
