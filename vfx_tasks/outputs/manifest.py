"""``vfx-run.json``: how the features of an output folder are made, recorded before anything is queued.

Every setting that changes the numbers is in :attr:`Manifest.settings`; a run whose settings
differ may not write into the folder (the producer stops, a worker refuses the task), because its
files would silently replace or pass for the folder's own. Versions and the creation time are
recorded too, but a newer torch or a later start does not make a folder another run's.
"""

# long: the file's one format (its facts, their bounds and which are left out at their defaults)
# and the producer's and workers' checks against it; split, a new fact would have to be followed
# through several modules.

from __future__ import annotations

import logging
import os
import platform
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, get_args

from vfx_tasks import __version__
from vfx_tasks.errors import ConfigurationError, ManifestMismatchError, OutputError
from vfx_tasks.extract.crops import crop_names
from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.extract.sampling import FrameSampler
from vfx_tasks.models.files import cached_sha256
from vfx_tasks.models.spec import SEGMENT_SAMPLERS, ModelSpec, Sampler
from vfx_tasks.storage import (
    FolderLike,
    encode_json,
    folder_exists,
    is_open_folder,
    open_folder,
    read_json,
    write_json,
)

logger = logging.getLogger(__name__)

MANIFEST_NAME = "vfx-run.json"
SCHEMA_VERSION = 1
#: A manifest takes about 2 kB; anything near this bound was not written by vfx_tasks.
MAX_MANIFEST_BYTES = 1 << 20
_LIBRARIES = ("torch", "numpy", "decord", "mmaction2", "mmengine", "mmcv-lite")

ManifestCheck = Literal["created", "adopted", "matched", "replaced"]


@dataclass(frozen=True)
class ModelFacts:
    """What the recipe's model and crop type imply, recorded so that a reader needs no model code."""

    checkpoint_file: str
    #: sha256 of the checkpoint file; ``None`` where the producer could not read it (then not compared).
    checkpoint_sha256: str | None
    #: Crop names in the order of the second axis of every ``(clips, n_crops, D)`` file.
    crop_order: tuple[str, ...]
    clip_len: int
    sampling_rate: int
    #: Source frames one clip covers (clip_len x sampling_rate): 64 for both backbones; 0 for
    #: segment samplers, whose clips each cover a share of the video.
    clip_span_frames: int
    resize_short_side: int
    crop_size: int
    mean_rgb: tuple[float, ...]
    std_rgb: tuple[float, ...]
    feature_dim: int
    # The facts below are left out of the file while they hold these defaults, so that the two
    # default models' manifests stay as they were before model-zoo models existed.
    #: The model's sampler (:data:`~vfx_tasks.models.spec.Sampler`), for finding clips' frames again.
    sampler: str = "video_features"
    #: ``SampleFrames(target_fps=...)`` of the config (X3D); clip spans are at this frame rate.
    target_fps: float | None = None
    #: The config's name (``configs/recognition/<family>/<file>``, or a user's file name).
    config_name: str | None = None
    #: sha256 of the resolved config, its ``_base_`` files merged.
    config_sha256: str | None = None

    def __post_init__(self) -> None:
        """Refuse facts no backbone has: readers size arrays with them (clip starts, HDF5 chunks).

        Raises:
            ValueError: a fact of the wrong type or out of its bounds.
        """
        bounds = (("clip_len", 1, 1024), ("sampling_rate", 1, 1024), ("resize_short_side", 1, 8192),
                  ("crop_size", 1, 8192), ("feature_dim", 1, 65536))
        for name, low, high in bounds:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
        span = 0 if self.sampler in SEGMENT_SAMPLERS else self.clip_len * self.sampling_rate
        if self.clip_span_frames != span:
            raise ValueError(f"clip_span_frames {self.clip_span_frames!r} is not {span} for a "
                             f"{self.sampler!r} sampler of {self.clip_len} x {self.sampling_rate}")
        if self.sampler not in _SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(_SAMPLERS)}, not {self.sampler!r}")
        if self.target_fps is not None and (
            isinstance(self.target_fps, bool) or not isinstance(self.target_fps, (int, float))
            or not 0 < self.target_fps <= 1000
        ):
            raise ValueError(f"target_fps must be a number from 0 to 1000, not {self.target_fps!r}")
        if not 1 <= len(self.crop_order) <= 10 or not all(isinstance(c, str) for c in self.crop_order):
            raise ValueError(f"crop_order must name 1 to 10 crops, not {self.crop_order!r}")
        if not isinstance(self.checkpoint_file, str) or not (
            self.checkpoint_sha256 is None or isinstance(self.checkpoint_sha256, str)
        ):
            raise ValueError("checkpoint_file and checkpoint_sha256 must be strings")
        if not all(isinstance(value, (str, type(None))) for value in (self.config_name, self.config_sha256)):
            raise ValueError("config_name and config_sha256 must be strings")

    def frame_sampler(self) -> FrameSampler:
        """The clips' sampler these facts describe (for the index and exports)."""
        return FrameSampler(self.sampler, self.clip_len, self.sampling_rate,  # type: ignore[arg-type]
                            self.target_fps)

    def to_json(self) -> dict[str, Any]:
        """Every fact, those at their :data:`_OPTIONAL_FACTS` default left out."""
        return {key: value for key, value in asdict(self).items()
                if not (key in _OPTIONAL_FACTS and value == _OPTIONAL_FACTS[key])}


#: Facts recorded only when they differ from these values (model-zoo models, a user's config).
_OPTIONAL_FACTS: dict[str, Any] = {"sampler": "video_features", "target_fps": None, "config_name": None,
                                   "config_sha256": None}
_SAMPLERS: tuple[str, ...] = get_args(Sampler)


@dataclass(frozen=True)
class Settings:
    """What changes the numbers of a feature file: the recipe's settings that do, and the model's
    facts (compared key by key between runs)."""

    recipe: Recipe
    facts: ModelFacts

    def to_json(self) -> dict[str, Any]:
        """One flat object: the recipe's feature settings and the facts."""
        return {**self.recipe.feature_settings(), **self.facts.to_json()}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Settings:
        facts = {f.name: raw[f.name] for f in fields(ModelFacts) if f.name not in _OPTIONAL_FACTS}
        facts.update({name: raw.get(name, default) for name, default in _OPTIONAL_FACTS.items()})
        for key in ("crop_order", "mean_rgb", "std_rgb"):
            if not isinstance(facts[key], list):
                raise ValueError(f"{key} must be a list, not {facts[key]!r}")
            facts[key] = tuple(facts[key])
        # A fact may share its name with a recipe field (checkpoint_sha256): the recipe reads its own.
        settings = {key: value for key, value in raw.items() if key not in facts}
        return cls(Recipe.from_mapping(settings), ModelFacts(**facts))


@dataclass(frozen=True)
class Manifest:
    """The content of ``vfx-run.json``: settings, versions, creation time, schema version."""

    settings: Settings
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    schema: int = SCHEMA_VERSION

    def differences(self, other: Manifest) -> dict[str, tuple[Any, Any]]:
        """``key -> (this value, other value)`` for every setting that differs.

        A checkpoint hash missing on either side is unknown, not different.
        """
        mine, theirs = self.settings.to_json(), other.settings.to_json()
        found = {}
        for key in dict.fromkeys([*mine, *theirs]):
            if key == "checkpoint_sha256" and None in (mine.get(key), theirs.get(key)):
                continue
            if mine.get(key) != theirs.get(key):
                found[key] = (mine.get(key), theirs.get(key))
        return found

    def to_json(self) -> dict[str, Any]:
        return {"schema": self.schema, "created": self.created, "settings": self.settings.to_json(),
                "versions": dict(self.versions)}

    @classmethod
    def from_json(cls, data: dict[str, Any], *, where: str = "manifest") -> Manifest:
        """Parse :meth:`to_json`'s output.

        Raises:
            ConfigurationError: a newer schema, or a file that is not a manifest.
        """
        try:
            schema = int(data["schema"])
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise _not_a_manifest(where, e) from e
        if schema > SCHEMA_VERSION:
            raise ConfigurationError(
                f"{where} has schema {schema}, newer than this vfx_tasks understands ({SCHEMA_VERSION}). "
                "Upgrade vfx_tasks to read it."
            )
        try:
            settings = Settings.from_json(dict(data["settings"]))
            return cls(settings, dict(data.get("versions", {})), str(data.get("created", "")), schema)
        except (KeyError, TypeError, ValueError, ConfigurationError) as e:
            raise _not_a_manifest(where, e) from e


def _not_a_manifest(where: str, error: Exception) -> ConfigurationError:
    return ConfigurationError(
        f"{where} is not a vfx_tasks manifest ({type(error).__name__}: {error}). Move it away and run again."
    )


def manifest_for(recipe: Recipe, *, pretrained_dir: str | os.PathLike[str] | None) -> Manifest:
    """The manifest of a run of ``recipe``; the checkpoint is hashed if ``pretrained_dir`` has it
    (a user's own checkpoint file wherever it is)."""
    spec = recipe.model_spec()
    checkpoint = _checkpoint_file(spec, pretrained_dir)
    facts = ModelFacts(
        checkpoint_file=spec.checkpoint_filename,
        checkpoint_sha256=cached_sha256(checkpoint) if checkpoint and checkpoint.is_file() else None,
        crop_order=crop_names(recipe.crop_type),
        clip_len=spec.clip_len,
        sampling_rate=spec.sampling_rate,
        clip_span_frames=spec.clip_span_frames,
        resize_short_side=spec.resize_short_side,
        crop_size=spec.crop_size,
        mean_rgb=tuple(spec.mean_rgb),
        std_rgb=tuple(spec.std_rgb),
        feature_dim=spec.feature_dim,
        sampler=spec.sampler,
        target_fps=spec.target_fps,
        config_name=spec.config_name,
        config_sha256=spec.config_sha256,
    )
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Manifest(Settings(recipe, facts), versions(), created)


def _checkpoint_file(spec: ModelSpec, pretrained_dir: str | os.PathLike[str] | None) -> Path | None:
    if spec.checkpoint_file is not None:
        return Path(spec.checkpoint_file)
    return None if pretrained_dir is None else Path(pretrained_dir, spec.checkpoint_filename)


@cache
def versions() -> dict[str, str]:
    """The package, Python and library versions that went into the numbers."""
    found = {"vfx_tasks": __version__, "python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def manifest_path(output_dir: str | os.PathLike[str]) -> str:
    """Where a folder's manifest is (for messages)."""
    return f"{str(output_dir).rstrip('/')}/{MANIFEST_NAME}"


def read_manifest(output_dir: FolderLike) -> Manifest | None:
    """The folder's manifest, or ``None`` when it has none (a folder written before manifests).

    Raises:
        UnsafeFileError: ``vfx-run.json`` is a link, not a regular file, or over 1 MiB.
        ConfigurationError: it is not a manifest (not JSON, damaged, or from a newer vfx_tasks).
    """
    if not folder_exists(output_dir):
        return None
    with open_folder(output_dir) as folder:
        data = read_json(folder, MANIFEST_NAME, limit=MAX_MANIFEST_BYTES, what="(a manifest)")
        where = str(folder.path / MANIFEST_NAME)
    if data is None:
        return None
    return Manifest.from_json(data, where=where)


def write_manifest(output_dir: FolderLike, manifest: Manifest) -> None:
    """Write ``vfx-run.json`` atomically (temporary file, then rename; a link there is replaced)."""
    with open_folder(output_dir, create=True) as folder:
        write_json(folder, MANIFEST_NAME, manifest.to_json(), what="the manifest")


def describe_differences(differences: dict[str, tuple[Any, Any]], *, ours: str, theirs: str) -> str:
    """``precision fp16 (ours) vs fp32 (theirs); ...`` for a message."""
    return "; ".join(f"{key} {a} ({ours}) vs {b} ({theirs})" for key, (a, b) in differences.items())


def claim_output_dir(
    output_dir: FolderLike, manifest: Manifest, *, force: bool = False, dry_run: bool = False
) -> ManifestCheck:
    """Check a run's manifest against its output folder's, and record it there (before queueing).

    Returns what happened: ``created`` (new folder), ``adopted`` (feature files but no manifest:
    written before manifests, resumed as this run's, with a warning), ``matched``, ``replaced``
    (``force`` over different settings).

    Raises:
        ManifestMismatchError: the folder's manifest has other settings and ``force`` is off.
    """
    existing = read_manifest(output_dir)
    if existing is not None:
        differences = manifest.differences(existing)
        if not differences:
            return "matched"
        if not force:
            raise ManifestMismatchError(
                f"{manifest_path(_shown(output_dir))} records other settings: "
                f"{describe_differences(differences, ours='this run', theirs='the folder')}. "
                "Write this run to another --output_dir, or pass --force to replace the manifest and "
                "recompute every video there."
            )
        outcome: ManifestCheck = "replaced"
    elif _has_feature_files(output_dir):
        # The caller warns: these files are resumed as this run's, which nothing can verify.
        outcome = "adopted"
    else:
        outcome = "created"
    if dry_run:
        return outcome
    if outcome == "replaced":
        write_manifest(output_dir, manifest)
        return outcome
    # Created only if still absent (an object store's conditional PUT, a hard link on disk): of two
    # producers claiming a new folder at once, one writes, the other reads what that one wrote.
    with open_folder(output_dir, create=True) as folder:
        if folder.write_new(MANIFEST_NAME, encode_json(manifest.to_json()), what="the manifest"):
            return outcome
    return _claimed_meanwhile(output_dir, manifest)


def _claimed_meanwhile(output_dir: FolderLike, manifest: Manifest) -> ManifestCheck:
    """The outcome when another producer wrote the manifest between our read and our write."""
    existing = read_manifest(output_dir)
    if existing is None:
        raise OutputError(
            f"{manifest_path(_shown(output_dir))} appeared and vanished while this run claimed the folder. "
            "Run the command again."
        )
    differences = manifest.differences(existing)
    if differences:
        raise ManifestMismatchError(
            f"Another run claimed {_shown(output_dir)} at the same time, with other settings: "
            f"{describe_differences(differences, ours='this run', theirs='the folder')}. Write this run "
            "to another --output_dir."
        )
    return "matched"


_warned_without_manifest: set[str] = set()


def check_task_settings(output_dir: FolderLike, manifest: Manifest) -> None:
    """A worker's check before it computes anything: the task's settings are its folder's.

    A folder without a manifest (written before them) is accepted, with one warning per folder.

    Raises:
        ManifestMismatchError: the settings differ (a permanent failure: the task belongs to
            another run, or the folder was claimed by a later ``--force`` run).
    """
    existing = read_manifest(output_dir)
    shown = _shown(output_dir)
    if existing is None:
        if shown not in _warned_without_manifest:
            _warned_without_manifest.add(shown)
            logger.warning("%s has no %s (written before manifests); not checking settings", shown,
                           MANIFEST_NAME)
        return
    differences = manifest.differences(existing)
    if differences:
        raise ManifestMismatchError(
            f"This task's settings differ from {manifest_path(shown)}: "
            f"{describe_differences(differences, ours='task', theirs='folder')}. The folder belongs to "
            "another run: queue the videos with another --output_dir, or with --force to replace it."
        )


def _has_feature_files(output_dir: FolderLike) -> bool:
    if not folder_exists(output_dir):
        return False
    with open_folder(output_dir) as folder:
        return any(name.endswith(".npy") and not is_link for name, is_link in folder.walk())


def _shown(output_dir: FolderLike) -> str:
    """The folder's path or URL, for messages."""
    return str(output_dir.path if is_open_folder(output_dir) else output_dir)  # type: ignore[union-attr]
