"""Supported models: the two seed specs, mmaction2's model zoo, and (lazily) their implementations.

Only :mod:`vfx_tasks.models.backbone` and :mod:`vfx_tasks.models._mmaction_compat` import
mmaction2; importing this package does not, so the CLI and the queue stay light. Checkpoints are
found, read safely and downloaded here too. It may import :mod:`vfx_tasks.errors` only.

Names resolve in one place, :func:`get_model_spec`: the two seed models first (I3D and Swin-T,
hand-written to keep the original tool's preprocessing, names and aliases), then every model of
mmaction2's zoo by its zoo name or a short alias, its spec read from its config on first use.
"""

from __future__ import annotations

import difflib
import functools
import os

from vfx_tasks.errors import ConfigurationError, UnknownModelError
from vfx_tasks.models.from_config import spec_from_config
from vfx_tasks.models.i3d import I3D_R50_NL
from vfx_tasks.models.spec import ModelSpec
from vfx_tasks.models.swin import SWIN_TINY
from vfx_tasks.models.zoo import ZOO_ALIASES, ZooEntry, find_zoo_entry, zoo_entries, zoo_families

#: The two seed models, by full name. The first one is the default, as in the original tool.
MODEL_SPECS: dict[str, ModelSpec] = {spec.name: spec for spec in (I3D_R50_NL, SWIN_TINY)}
DEFAULT_MODEL: str = I3D_R50_NL.name


def model_names(*, with_aliases: bool = False, zoo: bool = False) -> list[str]:
    """Return the accepted model names: the seeds' full names, then (if asked) their aliases, then
    (with ``zoo``) every other model-zoo name and the zoo aliases."""
    names = list(MODEL_SPECS)
    if with_aliases:
        names += [alias for spec in MODEL_SPECS.values() for alias in spec.aliases]
    if zoo:
        names += [name for name in zoo_entries() if name not in MODEL_SPECS]
        if with_aliases:
            names += list(ZOO_ALIASES)
    return names


def _seed_spec(name: str) -> ModelSpec | None:
    if name in MODEL_SPECS:
        return MODEL_SPECS[name]
    return next((spec for spec in MODEL_SPECS.values() if name in spec.aliases), None)


def zoo_spec(name: str) -> ModelSpec:
    """The spec of the model-zoo model ``name`` (a zoo name or alias), read from its config.

    Raises:
        UnknownModelError: ``name`` is not in the zoo.
        ConfigurationError: its config is missing from the wheel or asks for something unsupported.
        DependencyError: its backbone cannot run with the installed packages.
    """
    entry = find_zoo_entry(name)
    if entry is None:
        raise UnknownModelError(f"Unknown model-zoo model ({name!r}).")
    return _spec_of(entry.name)


@functools.cache
def _spec_of(zoo_name: str) -> ModelSpec:
    entry = zoo_entries()[zoo_name]

    if entry.config_file is None:
        raise ConfigurationError(
            f"Model {entry.name}: the mmaction2 1.2.0 wheel lacks its config ({entry.config_name}). "
            "Give the config with --model-config and the weights with --checkpoint."
        )
    aliases = tuple(alias for alias, target in ZOO_ALIASES.items() if target == entry.name)
    return spec_from_config(entry.config_file, entry.weights_url, name=entry.name, aliases=aliases,
                            family=entry.family, config_name=entry.config_name)


def get_model_spec(name: str) -> ModelSpec:
    """Return the spec of a model given its full name or one of its aliases.

    The seeds' names and aliases win; any other model-zoo name or zoo alias is read from its
    config (once per process).

    Raises:
        UnknownModelError: ``name`` is neither; the message suggests close names.
        ConfigurationError, DependencyError: as :func:`zoo_spec`.
    """
    seed = _seed_spec(name)
    if seed is not None:
        return seed
    if find_zoo_entry(name) is not None:
        return zoo_spec(name)
    close = difflib.get_close_matches(name, model_names(with_aliases=True, zoo=True), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"Unknown model ({name!r}). Supported values are {', '.join(model_names(with_aliases=True))}, "
        f"or any of the {len(zoo_entries())} mmaction2 model-zoo names and their short aliases "
        f"(`vfx-models` lists them).{hint}"
    )


def resolve_model(
    model: str | None = None,
    *,
    config: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
) -> ModelSpec:
    """The spec of a model named ``model``, or of a user's own ``config`` with ``checkpoint``.

    The one entry point for ``--model`` / ``--model-config --checkpoint``: exactly one of the
    two forms must be given.

    Raises:
        ConfigurationError: both forms or neither, or a config without its checkpoint.
        UnknownModelError, DependencyError: as :func:`get_model_spec` and :func:`spec_from_config`.
    """

    if config is not None or checkpoint is not None:
        if model is not None or config is None or checkpoint is None:
            raise ConfigurationError(
                "Give either a model name (--model) or a config with its weights (--model-config "
                "and --checkpoint), not a mix."
            )
        return spec_from_config(config, checkpoint)
    return get_model_spec(model if model is not None else DEFAULT_MODEL)


__all__ = [
    "DEFAULT_MODEL",
    "MODEL_SPECS",
    "ModelSpec",
    "ZooEntry",
    "get_model_spec",
    "model_names",
    "resolve_model",
    "spec_from_config",
    "zoo_entries",
    "zoo_families",
    "zoo_spec",
]
