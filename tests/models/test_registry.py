"""The model specs: names, aliases, and agreement with mmaction2's own configs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from vfx_tasks.errors import UnknownModelError
from vfx_tasks.models import DEFAULT_MODEL, MODEL_SPECS, get_model_spec, model_names


def test_default_and_aliases() -> None:
    assert DEFAULT_MODEL.startswith("i3d_imagenet-pretrained-r50-nl-dot-product")
    assert get_model_spec("i3d").feature_dim == 2048
    assert get_model_spec("swin-t").feature_dim == 768
    assert get_model_spec(DEFAULT_MODEL) is get_model_spec("i3d")


def test_unknown_model_lists_the_choices() -> None:
    with pytest.raises(UnknownModelError, match="Unknown model \\('resnet'\\). Supported values are i3d_"):
        get_model_spec("resnet")
    assert set(model_names()) <= set(model_names(with_aliases=True))


def test_checkpoint_names_carry_their_hash_prefix() -> None:
    assert get_model_spec("i3d").checkpoint_sha256_prefix == "8e1f2148"
    assert get_model_spec("swin-t").checkpoint_sha256_prefix == "241016b2"


@pytest.mark.parametrize("name", list(MODEL_SPECS))
def test_spec_agrees_with_mmaction2_config_and_metafile(name: str) -> None:
    from mmengine.config import Config

    spec = MODEL_SPECS[name]
    mmaction_dir = Path(list(importlib.util.find_spec("mmaction").submodule_search_locations)[0])
    family = "i3d" if name.startswith("i3d") else "swin"
    config_dir = mmaction_dir / ".mim" / "configs" / "recognition" / family
    backbone = Config.fromfile(config_dir / f"{name}.py").model.backbone.to_dict()
    # Only the source of the initial weights may differ: ours always come from the checkpoint.
    backbone["pretrained"] = None
    normalise = lambda d: {k: (list(map(normalise_value, v)) if isinstance(v, (list, tuple)) else v)  # noqa: E731
                           for k, v in d.items()}
    assert normalise(backbone) == normalise(spec.backbone_config)
    assert spec.checkpoint_url in (config_dir / "metafile.yml").read_text()


def normalise_value(value):  # tuples and lists compare equal, nested too
    return list(map(normalise_value, value)) if isinstance(value, (list, tuple)) else value
