"""Building mmaction2 backbones and loading their weights: the only user of mmaction2."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from torch import nn

from vfx_tasks.models._mmaction_compat import import_mmaction_backbones
from vfx_tasks.models.checkpoint import check_state_dict_fits, read_backbone_state_dict
from vfx_tasks.models.files import checkpoint_path
from vfx_tasks.models.spec import ModelSpec

logger = logging.getLogger(__name__)


def build_backbone(spec: ModelSpec) -> nn.Module:
    """Build ``spec``'s backbone with freshly initialised (meaningless) weights."""
    backbones = import_mmaction_backbones()
    config = copy.deepcopy(spec.backbone_config)
    backbone_cls = getattr(backbones, config.pop("type"))
    return backbone_cls(**config)


def load_backbone(spec: ModelSpec, pretrained_dir: Path) -> nn.Module:
    """Build ``spec``'s backbone, load its checkpoint strictly and put it in eval mode.

    Returns the module on the CPU; the caller moves it to its device.

    Raises:
        CheckpointNotFoundError: the checkpoint file is not in ``pretrained_dir``.
        CheckpointError: the file cannot be read.
        CheckpointMismatchError: a backbone tensor is missing, unexpected or mis-shaped.
    """
    path = checkpoint_path(spec, pretrained_dir)
    state = read_backbone_state_dict(path, spec)
    backbone = build_backbone(spec)
    check_state_dict_fits(backbone.state_dict(), state, path=path, spec=spec)
    backbone.load_state_dict(state, strict=True)
    # mmaction2's ResNet3d.train() returns None, so eval() cannot be chained.
    backbone.eval()
    backbone.requires_grad_(False)
    logger.info("Loaded %s from %s", spec.name, path)
    return backbone
