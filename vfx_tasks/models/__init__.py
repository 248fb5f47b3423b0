"""Supported backbones: their specs, and (lazily) their mmaction2 implementations.

Only :mod:`vfx_tasks.models.backbone` and :mod:`vfx_tasks.models._mmaction_compat` import
mmaction2; importing this package does not, so the CLI and the queue stay light. Checkpoints are
found, read safely and downloaded here too. It may import :mod:`vfx_tasks.errors` only.
"""

from __future__ import annotations

from vfx_tasks.errors import UnknownModelError
from vfx_tasks.models.i3d import I3D_R50_NL
from vfx_tasks.models.spec import ModelSpec
from vfx_tasks.models.swin import SWIN_TINY

#: Every supported model, by full name. The first one is the default, as in the original tool.
MODEL_SPECS: dict[str, ModelSpec] = {spec.name: spec for spec in (I3D_R50_NL, SWIN_TINY)}
DEFAULT_MODEL: str = I3D_R50_NL.name


def model_names(*, with_aliases: bool = False) -> list[str]:
    """Return the accepted model names (full names first, then aliases if asked)."""
    names = list(MODEL_SPECS)
    if with_aliases:
        names += [alias for spec in MODEL_SPECS.values() for alias in spec.aliases]
    return names


def get_model_spec(name: str) -> ModelSpec:
    """Return the spec of a model given its full name or one of its aliases.

    Raises:
        UnknownModelError: ``name`` is neither.
    """
    if name in MODEL_SPECS:
        return MODEL_SPECS[name]
    for spec in MODEL_SPECS.values():
        if name in spec.aliases:
            return spec
    raise UnknownModelError(
        f"Unknown model ({name!r}). Supported values are {', '.join(model_names(with_aliases=True))}."
    )


__all__ = ["DEFAULT_MODEL", "MODEL_SPECS", "ModelSpec", "get_model_spec", "model_names"]
