"""A task's own model config and checkpoint: what a worker checks before it reads either.

An mmaction2 config is Python that mmengine executes, and a task message is untrusted input
(:mod:`vfx_tasks.queue.worker.message`). So a task naming ``model_config`` is refused unless the
config and every ``_base_`` file it pulls in lie under ``VFX_MODEL_ROOTS`` (mmaction2's own
configs are allowed as they are installed software), a checkpoint file lies there too, and the
message carries the sha256 that the producer recorded of both. The config's files are hashed here,
each checked to be in a trusted folder before it is opened, and before mmengine reads any of them;
a checkpoint is hashed when it is read or downloaded (:mod:`vfx_tasks.models.user_model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vfx_tasks.errors import ModelFilesChangedError, UntrustedMessageError
from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.models.user_model import config_sources_sha256, is_url
from vfx_tasks.models.zoo import configs_root
from vfx_tasks.settings import Settings

_VARIABLE = "VFX_MODEL_ROOTS"
_SEE = "see docs/queue.md#a-users-own-model"


def check_model_files(recipe: Recipe, *, settings: Settings) -> None:
    """Refuse a task whose own model files a worker must not read; return quietly when it may.

    Raises:
        UntrustedMessageError: the sha256 are missing, or a file lies outside ``VFX_MODEL_ROOTS``.
        ModelFilesChangedError: the config's files no longer hash to the message's sha256.
        ConfigurationError: the config cannot be read without running it (see
            :func:`~vfx_tasks.models.user_model.config_sources`).
    """
    if not recipe.model_config:
        return
    if not (recipe.model_config_sha256 and recipe.checkpoint_sha256):
        raise _refuse(
            "a task with its own model_config must carry model_config_sha256 and checkpoint_sha256, "
            "which vfx-enqueue records when it checks the files."
        )
    roots = settings.model_roots

    def config_in_trusted_folder(path: Path) -> None:
        _check_under("model_config", path, [*roots, configs_root() / "configs"], roots)

    actual = config_sources_sha256(recipe.model_config, check=config_in_trusted_folder)
    if actual != recipe.model_config_sha256:
        raise ModelFilesChangedError(
            f"Model config {recipe.model_config} (with its _base_ files) has sha256 {actual[:16]}..., but "
            f"the task carries {recipe.model_config_sha256[:16]}...: it changed since the run was queued. "
            "Restore it, or queue the run again with vfx-enqueue --force to use the new config."
        )
    if not is_url(recipe.checkpoint):
        _check_under("checkpoint", _resolved(recipe.checkpoint), roots, roots)


def _resolved(path: str) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise _refuse(f"checkpoint {path[:200]!r} cannot be resolved ({e}).") from e


def _check_under(name: str, path: Path, allowed: Sequence[Path], roots: Sequence[Path]) -> None:
    """Refuse ``path`` (resolved) unless it lies under one of ``allowed`` (resolved too)."""
    if any(path.is_relative_to(folder.resolve()) for folder in allowed):
        return
    if not roots:
        raise _refuse(
            f"{name} {path} is not under {_VARIABLE}, which is not set on this worker, so it runs "
            f"model-zoo models only. Set {_VARIABLE} to the folders of trusted configs ({_SEE})."
        )
    shown = ":".join(map(str, roots))
    raise _refuse(
        f"{name} {path} is not under {_VARIABLE} ({shown}); put it there or add its folder ({_SEE})."
    )


def _refuse(problem: str) -> UntrustedMessageError:
    return UntrustedMessageError(f"Refusing task: {problem}")
