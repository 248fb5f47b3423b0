"""Building mmaction2 backbones (and necks) and loading their weights: the only user of mmaction2.

The module built here, the *trunk*, takes clip-crops in the model's layout and returns what the
recognizer's head pools (:mod:`vfx_tasks.models.pooling`). For the two seed models it is the bare
backbone, exactly as before; for a model read from a config it is a :class:`FeatureTrunk`, the
backbone and neck under the recognizer's own names, so that checkpoint keys load unchanged.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from torch import nn

from vfx_tasks.errors import ConfigurationError, ModelFilesChangedError
from vfx_tasks.models._mmaction_compat import build_mmaction_module, import_mmaction_backbones
from vfx_tasks.models.checkpoint import check_state_dict_fits, read_backbone_state_dict, read_trunk_state_dict
from vfx_tasks.models.files import cached_sha256, checkpoint_path
from vfx_tasks.models.spec import ModelSpec

logger = logging.getLogger(__name__)


class FeatureTrunk(nn.Module):
    """A recognizer without its head: backbone, then neck if any, as mmaction2 runs them at test time.

    A 2-D backbone's frame maps are regrouped per clip before a neck, as ``Recognizer2D`` does
    (``(N * T, C, h, w)`` stages become ``(N, C, T, h, w)``).
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module | None, *, spec: ModelSpec) -> None:
        super().__init__()
        self.backbone = backbone
        if neck is not None:
            self.neck = neck
        self.frames_per_clip = spec.clip_len
        self.input_format = spec.input_format

    def forward(self, inputs: Any) -> Any:
        maps = self.backbone(inputs)
        if not hasattr(self, "neck"):
            return maps
        if self.input_format == "NCHW":
            maps = [
                stage.reshape((-1, self.frames_per_clip) + stage.shape[1:]).transpose(1, 2).contiguous()
                for stage in maps
            ]
        maps, _ = self.neck(maps)
        return maps


def _is_seed(spec: ModelSpec) -> bool:
    return spec.config_path is None


def build_backbone(spec: ModelSpec) -> nn.Module:
    """Build ``spec``'s backbone with freshly initialised (meaningless) weights."""
    config = copy.deepcopy(spec.backbone_config)
    if _is_seed(spec):
        backbones = import_mmaction_backbones()
        backbone_cls = getattr(backbones, config.pop("type"))
        return backbone_cls(**config)
    return _build(config, spec, "backbone")


def build_trunk(spec: ModelSpec) -> nn.Module:
    """Build the module whose output ``spec``'s head pools (weights freshly initialised)."""
    if _is_seed(spec):
        return build_backbone(spec)
    neck = _build(copy.deepcopy(spec.neck_config), spec, "neck") if spec.neck_config else None
    return FeatureTrunk(build_backbone(spec), neck, spec=spec)


def build_recognizer(spec: ModelSpec) -> nn.Module:
    """Build the whole mmaction2 recognizer of a config-read spec (head included), freshly initialised.

    Only stand-in checkpoints need the head (their files hold every tensor an official one holds).
    """
    from mmengine.config import Config

    if _is_seed(spec):
        raise ConfigurationError(f"Model {spec.name} is built in, not read from a config.")
    model = Config.fromfile(spec.config_path).model.to_dict()
    model["backbone"] = copy.deepcopy(spec.backbone_config)  # ``pretrained`` disabled
    return _build(model, spec, "recognizer")


def _build(config: dict[str, Any], spec: ModelSpec, part: str) -> nn.Module:
    try:
        return build_mmaction_module(config)
    except Exception as e:  # a registry miss is a KeyError, a bad argument a TypeError, ...
        raise ConfigurationError(
            f"mmaction2 cannot build the {part} of model {spec.name} ({spec.config_name}): "
            f"{type(e).__name__}: {e}. Check the config's model.{part} section."
        ) from e


def load_backbone(spec: ModelSpec, pretrained_dir: Path) -> nn.Module:
    """Build ``spec``'s trunk, load its checkpoint strictly and put it in eval mode.

    Returns the module on the CPU; the caller moves it to its device. For the seed models it is
    the bare backbone; otherwise a :class:`FeatureTrunk`.

    Raises:
        CheckpointNotFoundError: the checkpoint file is not in ``pretrained_dir`` (or, for a
            user's own checkpoint, not where it was given).
        CheckpointError: the file cannot be read.
        CheckpointMismatchError: a backbone or neck tensor is missing, unexpected or mis-shaped.
        ConfigurationError: mmaction2 cannot build the config's backbone or neck.
        ModelFilesChangedError: the file's sha256 is not the one its run pinned (a user's weights).
    """
    path = checkpoint_path(spec, pretrained_dir)
    if spec.checkpoint_sha256 and (actual := cached_sha256(path)) != spec.checkpoint_sha256:
        raise ModelFilesChangedError(
            f"Checkpoint {path} has sha256 {actual[:16]}..., but the run of model {spec.name} was queued "
            f"with {spec.checkpoint_sha256[:16]}...: it changed since. Restore it, or queue the run again "
            "with vfx-enqueue --force to use the new weights."
        )
    if _is_seed(spec):
        state = read_backbone_state_dict(path, spec)
    else:
        state = read_trunk_state_dict(path, spec, with_neck=spec.neck_config is not None)
    trunk = build_trunk(spec)
    check_state_dict_fits(trunk.state_dict(), state, path=path, spec=spec)
    trunk.load_state_dict(state, strict=True)
    # mmaction2's ResNet3d.train() returns None, so eval() cannot be chained.
    trunk.eval()
    trunk.requires_grad_(False)
    logger.info("Loaded %s from %s", spec.name, path)
    return trunk
