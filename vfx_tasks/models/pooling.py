"""From the backbone's (or neck's) output to one feature per clip-crop, pooled as the head pools it.

The feature is what a recognizer's classifier receives: the head's average pool (and, for 2-D
models, its average over a clip's frames), not the class scores. Each :data:`Pooling` kind
reproduces one family of mmaction2 heads; which kind a model uses is read from its config
(:mod:`vfx_tasks.models.from_config`).
"""

from __future__ import annotations

from typing import Any

import torch

from vfx_tasks.errors import ConfigurationError
from vfx_tasks.models.spec import ModelSpec


def pool_feature_maps(maps: Any, spec: ModelSpec, *, num_clips: int) -> torch.Tensor:
    """Pool the trunk's output for ``num_clips`` clip-crops into ``(num_clips, D)`` float32.

    ``maps`` is what :func:`~vfx_tasks.models.backbone.build_trunk`'s module returns: a
    ``(N, D, t, h, w)`` tensor, SlowFast's ``(slow, fast)`` pair, MViT's stages of ``[patch
    tokens, class token]``, ``(N, D)`` vectors, or ``(N * T, D, h, w)`` frame maps of a 2-D model.
    Computed in float32 whatever the autocast precision of the trunk.

    Raises:
        ConfigurationError: the output does not have the shape the head expects; the config
            combines a head with a backbone whose output it cannot pool.
    """
    kind = spec.pooling
    if kind == "avg3d":
        _expect(maps, 5, spec)
        return maps.float().mean(dim=(2, 3, 4))
    if kind == "slowfast":
        slow, fast = maps
        # SlowFastHead concatenates the fast pathway first.
        return torch.cat([fast.float().mean(dim=(2, 3, 4)), slow.float().mean(dim=(2, 3, 4))], dim=1)
    if kind == "identity":
        _expect(maps, 2, spec)
        return maps.float()
    if kind == "segments2d":
        _expect(maps, 4, spec)
        per_frame = maps.float().mean(dim=(2, 3))
        return per_frame.view(num_clips, -1, per_frame.shape[-1]).mean(dim=1)
    patch_tokens, class_token = maps[-1]
    if kind == "cls_token":
        return class_token.float()
    return patch_tokens.float().mean(dim=(2, 3, 4))


def _expect(maps: Any, dims: int, spec: ModelSpec) -> None:
    if not isinstance(maps, torch.Tensor) or maps.dim() != dims:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ConfigurationError(
            f"Model {spec.name} ({spec.config_name or 'built in'}): its head pools a {dims}-D tensor "
            f"({spec.pooling}), but the backbone returns {shape}. The config's head does not fit its "
            "backbone; fix cls_head or the backbone's output."
        )
