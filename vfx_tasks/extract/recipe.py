"""What one video's extraction is asked to do: the settings of a task, as one typed value.

A :class:`Recipe` is built once by the producer (from ``vfx-enqueue``'s options, which are made
from its fields), travels flat in every task message, is checked by the worker as untrusted input,
names the run in the ledger (its run id hashes the fields that change the features) and is
recorded in the output folder's manifest. Adding a setting is adding a field here with
:func:`setting`: the option, the message argument, the check, the run id and the manifest follow
from it; only the code that acts on the new value has to be written.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import PurePath
from typing import Any, Literal, get_args, get_origin, get_type_hints

from vfx_tasks.errors import ConfigurationError
from vfx_tasks.extract.crops import CropType
from vfx_tasks.extract.decoders import DEFAULT_DECODER, DecoderName
from vfx_tasks.extract.device import Precision
from vfx_tasks.extract.sampling import ClipSampling
from vfx_tasks.models import DEFAULT_MODEL, ModelSpec, get_model_spec
from vfx_tasks.models.user_model import pin_user_model, pinned_model_spec

#: Clips per forward pass: 1024 centre crops of I3D already need far more than any GPU holds.
MAX_BATCH_SIZE = 1024
#: 100,000 clips of 64 frames at 25 fps is 71 hours of video: more than any single file we expect.
MAX_CLIPS_PER_VIDEO = 100_000
#: Linux's PATH_MAX; URLs of checkpoints are far shorter too.
MAX_LOCATION_CHARS = 4096
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class SettingInfo:
    """What a :class:`Recipe` field means beyond its type (kept in the field's metadata)."""

    #: One line for ``--help`` (empty where the choices say enough).
    help: str
    #: Whether another value gives other numbers: such fields name the run and fill the manifest.
    changes_features: bool = True
    #: Added after runs existed: left out of the run id while at its default, so that those runs
    #: keep their ids, ledgers and messages; a message without it gets the default.
    added_later: bool = False
    #: For whole numbers: -1 ("all") or 1 to this.
    maximum: int | None = None
    #: Whether ``vfx-enqueue`` has an option for it (else the producer fills it in).
    option: bool = True
    #: Recorded in the manifest and the ledger even at its default (else left out there while at
    #: it, so that folders and ledgers of runs made before the field existed stay as they were).
    recorded_at_default: bool = True


def setting(default: Any, *, help: str, changes_features: bool = True, added_later: bool = False,
            maximum: int | None = None, option: bool = True, recorded_at_default: bool = True) -> Any:
    """A :class:`Recipe` field: its default and its :class:`SettingInfo`."""
    info = SettingInfo(help, changes_features=changes_features, added_later=added_later, maximum=maximum,
                       option=option, recorded_at_default=recorded_at_default)
    return field(default=default, metadata={"setting": info})


@dataclass(frozen=True)
class Recipe:
    """The settings of one extraction; checked when built (:class:`ConfigurationError` if invalid)."""

    model: str = setting(DEFAULT_MODEL, help="Backbone: a model's full name or an alias.")
    crop_type: CropType = setting("5-crop", help="")
    num_clips_per_video: int = setting(-1, help="-1: every clip.", maximum=MAX_CLIPS_PER_VIDEO)
    clip_sampling: ClipSampling = setting("sequential", help="")
    precision: Precision = setting("fp32", help="")
    decoder: DecoderName = setting(
        DEFAULT_DECODER, added_later=True, help="decord: the reference; pyav: the [pyav] extra."
    )
    batch_size: int = setting(
        16, changes_features=False, maximum=MAX_BATCH_SIZE,
        help="Clips per GPU forward (CPU: 2); -1: all at once.",
    )
    # A user's own model instead of a named one; its files are pinned by the producer's sha256
    # (models/user_model.py), which a worker checks before it reads them.
    model_config: str = setting(
        "", added_later=True, recorded_at_default=False,
        help="Your own mmaction2 config, with --checkpoint.",
    )
    checkpoint: str = setting(
        "", added_later=True, recorded_at_default=False,
        help="Its weights: a file or an http(s) URL.",
    )
    model_config_sha256: str = setting(
        "", changes_features=False, option=False, help="sha256 of the config and its _base_ files."
    )
    checkpoint_sha256: str = setting(
        "", changes_features=False, option=False, help="sha256 of the checkpoint."
    )

    def __post_init__(self) -> None:
        for name, (kind, info) in _settings().items():
            _check(name, getattr(self, name), kind, info)
        if self.model_config:
            _check_user_model(self)
            # A user's model is named after its config file, as its spec is.
            object.__setattr__(self, "model", PurePath(self.model_config).stem)
            return
        if self.checkpoint or self.model_config_sha256 or self.checkpoint_sha256:
            raise ConfigurationError(
                "checkpoint and the sha256 fields belong to a model_config; give a model name alone, or "
                "--model-config with --checkpoint."
            )
        # An alias becomes the full name, so that both name the same run (UnknownModelError else).
        object.__setattr__(self, "model", get_model_spec(self.model).name)

    def pinned(self, *, pretrained_dir: str | os.PathLike[str]) -> Recipe:
        """This recipe with a user's config and checkpoint checked, and their sha256 recorded (the
        producer's step before queueing; a named model is returned as it is). See
        :func:`~vfx_tasks.models.user_model.pin_user_model` for what is checked and raised."""
        if not self.model_config:
            return self
        pinned = pin_user_model(self.model_config, self.checkpoint, pretrained_dir=pretrained_dir)
        return self.with_changes(
            model_config=pinned.config, model_config_sha256=pinned.config_sha256,
            checkpoint=pinned.checkpoint, checkpoint_sha256=pinned.checkpoint_sha256,
        )

    def model_spec(self) -> ModelSpec:
        """The recipe's model: a named one, or a user's config, read only once its files have the
        sha256 the run pinned.

        Raises:
            ModelFilesChangedError: a user's config changed since the run was queued.
            ConfigurationError, DependencyError: the model cannot run here, or a user's config
                is not pinned (:meth:`pinned`).
        """
        if not self.model_config:
            return get_model_spec(self.model)
        if not (self.model_config_sha256 and self.checkpoint_sha256):
            raise ConfigurationError(
                f"Model config {self.model_config} is not pinned: its run carries no sha256 of the config "
                "and the checkpoint (vfx-enqueue records them when it checks the files)."
            )
        return pinned_model_spec(
            self.model_config, config_sha256=self.model_config_sha256, checkpoint=self.checkpoint,
            checkpoint_sha256=self.checkpoint_sha256,
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, from_text: bool = False) -> Recipe:
        """The recipe ``values`` describe (a message's arguments, a manifest, a ledger entry).

        Every field that changes the features must be there but those added later; the others
        take their defaults when absent, and keys that are not fields are ignored. ``from_text``:
        numbers may be given as text (the ledger keeps strings).

        Raises:
            ConfigurationError: a field is missing, of the wrong type or out of bounds.
        """
        given = {}
        for name, (kind, info) in _settings().items():
            if name not in values:
                if info.added_later or not info.changes_features:
                    continue
                raise ConfigurationError(f"{name} is missing.")
            value = values[name]
            if from_text and kind is int and isinstance(value, str):
                value = _to_int(name, value)
            given[name] = value
        return cls(**given)

    def to_mapping(self) -> dict[str, Any]:
        """Every field as JSON primitives (the inverse of :meth:`from_mapping`)."""
        return {name: getattr(self, name) for name in _settings()}

    def feature_settings(self) -> dict[str, Any]:
        """The fields whose values change the features (recorded in the manifest), but those not
        :attr:`~SettingInfo.recorded_at_default` that hold their default."""
        defaults = {f.name: f.default for f in fields(self)}
        return {
            name: getattr(self, name)
            for name, (_, info) in _settings().items()
            if info.changes_features and (info.recorded_at_default or getattr(self, name) != defaults[name])
        }

    def run_key(self) -> dict[str, Any]:
        """:meth:`feature_settings` without the fields added later that hold their default: what
        names a run, the same as before those fields existed."""
        defaults = {f.name: f.default for f in fields(self)}
        settings = _settings()
        return {
            name: value
            for name, value in self.feature_settings().items()
            if not (settings[name][1].added_later and value == defaults[name])
        }

    def with_changes(self, **changes: Any) -> Recipe:
        return replace(self, **changes)


@functools.cache
def _settings() -> dict[str, tuple[Any, SettingInfo]]:
    """Each field's type (``str``, ``int`` or a ``Literal``) and its :class:`SettingInfo`."""
    hints = get_type_hints(Recipe)
    return {f.name: (hints[f.name], f.metadata["setting"]) for f in fields(Recipe)}


def setting_fields() -> dict[str, tuple[Any, Any, SettingInfo]]:
    """``name -> (type, default, info)`` of every setting, in declaration order (for the options)."""
    defaults = {f.name: f.default for f in fields(Recipe)}
    return {name: (kind, defaults[name], info) for name, (kind, info) in _settings().items()}


def choices(kind: Any) -> tuple[str, ...] | None:
    """The allowed values of a ``Literal`` field type, ``None`` for any other type."""
    return get_args(kind) if get_origin(kind) is Literal else None


def _check(name: str, value: Any, kind: Any, info: SettingInfo) -> None:
    allowed = choices(kind)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(f"{name} must be a whole number, not {type(value).__name__}.")
        if info.maximum is not None and value != -1 and not 1 <= value <= info.maximum:
            raise ConfigurationError(f"{name} ({value}) must be -1 (all) or 1 to {info.maximum}.")
        return
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, not {type(value).__name__}.")
    if allowed is not None and value not in allowed:
        raise ConfigurationError(f"{name} {value[:100]!r} is not one of {', '.join(allowed)}.")


def _check_user_model(recipe: Recipe) -> None:
    """A user's model comes with its checkpoint; the sha256 fields are empty (not pinned yet) or hashes."""
    if not recipe.checkpoint:
        raise ConfigurationError(
            "model_config needs its weights: give --checkpoint (a file or an http(s) URL)."
        )
    for name in ("model_config", "checkpoint"):
        if len(getattr(recipe, name)) > MAX_LOCATION_CHARS:
            raise ConfigurationError(f"{name} is longer than {MAX_LOCATION_CHARS} characters.")
    for name in ("model_config_sha256", "checkpoint_sha256"):
        value = getattr(recipe, name)
        if value and not _SHA256.fullmatch(value):
            raise ConfigurationError(f"{name} ({value[:100]!r}) is not a sha256 (64 lowercase hex digits).")


def _to_int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigurationError(f"{name} ({text[:100]!r}) is not a whole number.") from None
