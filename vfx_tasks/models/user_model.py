"""A user's own mmaction2 config and weights, pinned by sha256 so that a worker runs exactly them.

An mmaction2 config is Python that mmengine executes, its ``_base_`` files too, and a task message
is untrusted input. So a run of a user's config carries the sha256 of every file mmengine will
execute for it (:func:`config_sources_sha256`) and of its checkpoint. The files are found here
without executing anything (``_base_`` is read from the syntax tree as a literal), each handed to
the caller's check (a worker's trusted folders) before it is read, and hashed before mmengine
parses the config. The producer pins a config with :func:`pin_user_model`, which also builds it
and loads its weights strictly, so that a config that cannot work stops before anything is
queued; a worker gets the same spec back with :func:`pinned_model_spec`.
"""

from __future__ import annotations

import ast
import fcntl
import functools
import hashlib
import os
import stat
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from vfx_tasks.errors import ConfigurationError, ModelFilesChangedError
from vfx_tasks.models.download import download_checkpoint
from vfx_tasks.models.files import cached_sha256, checkpoint_path, file_sha256
from vfx_tasks.models.from_config import spec_from_config
from vfx_tasks.models.spec import ModelSpec

#: mmaction2's largest config is 7 kB; a "config" of a megabyte is something else.
MAX_CONFIG_BYTES = 1 << 20
#: The zoo's deepest chains have 3 files; this bounds a loop of files naming each other.
MAX_CONFIG_FILES = 64
#: What a check of a config file's location may raise to refuse it.
PathCheck = Callable[[Path], None]


def is_url(location: str) -> bool:
    """Whether a checkpoint location is an ``http(s)`` URL (else it is a file)."""
    return urllib.parse.urlsplit(location).scheme in ("http", "https")


@dataclass(frozen=True)
class PinnedModel:
    """A user's config and checkpoint as a run records them: where they are and their sha256."""

    config: str
    config_sha256: str
    checkpoint: str
    checkpoint_sha256: str
    spec: ModelSpec


def config_sources(
    config: str | os.PathLike[str], *, check: PathCheck | None = None
) -> list[tuple[Path, bytes]]:
    """The config file and every ``_base_`` file it pulls in, as mmengine reads them: ``(path, bytes)``.

    ``check`` is called with each file's resolved path before the file is opened (a worker refuses
    files outside its trusted folders there).

    Raises:
        ConfigurationError: a file is missing, not a regular ``.py`` file, over
            :data:`MAX_CONFIG_BYTES`, not Python, or uses what this reader cannot follow without
            executing it (a ``_base_`` that is not a literal, imports: mmengine's new-style configs).
    """
    found: list[tuple[Path, bytes]] = []

    def visit(path: Path, named_by: Path | None) -> None:
        if len(found) >= MAX_CONFIG_FILES:
            raise ConfigurationError(
                f"Model config {config} pulls in more than {MAX_CONFIG_FILES} _base_ files."
            )
        resolved = _resolved(path, named_by)
        if check is not None:
            check(resolved)
        data = _read_config_file(path, resolved, named_by)
        found.append((resolved, data))
        for base in _base_files(path, data):
            visit(_base_path(base, path), path)

    visit(Path(os.path.abspath(os.path.expanduser(config))), None)
    return found


def config_sources_sha256(config: str | os.PathLike[str], *, check: PathCheck | None = None) -> str:
    """sha256 over the sha256 of each of :func:`config_sources`, in mmengine's reading order."""
    digest = hashlib.sha256()
    for _, data in config_sources(config, check=check):
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


def model_folders(config: str | os.PathLike[str], checkpoint: str) -> list[Path]:
    """The folders a worker must trust (``VFX_MODEL_ROOTS``) to run this config: those of its files,
    and of its checkpoint file (a URL's is the worker's own pretrained folder), in the order they
    are met: the config's own folder first."""
    folders = [path.parent for path, _ in config_sources(config)]
    if not is_url(checkpoint):
        folders.append(Path(checkpoint).resolve().parent)
    return list(dict.fromkeys(folders))


def _resolved(path: Path, named_by: Path | None) -> Path:
    # Not strict: a missing file is reported when it is opened, after the caller's check, so that
    # the check's answer does not depend on whether a file exists outside the trusted folders.
    try:
        return path.resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise ConfigurationError(f"Model config {path}{_named_by(named_by)} cannot be resolved ({e}).") from e


def _named_by(config: Path | None) -> str:
    return f" (a _base_ of {config})" if config else ""


def _read_config_file(path: Path, resolved: Path, named_by: Path | None) -> bytes:
    """The bytes of a regular ``.py`` file of at most :data:`MAX_CONFIG_BYTES` (a FIFO is not waited on)."""
    where = _named_by(named_by)
    if resolved.suffix != ".py":
        raise ConfigurationError(
            f"Model config {path}{where} is not a .py file; vfx_tasks reads Python configs and their "
            "Python _base_ files only."
        )
    try:
        fd = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigurationError(
            f"Cannot open model config {path}{where} ({e.strerror}). Give the path of an mmaction2 config "
            "file whose _base_ files exist."
        ) from e
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_CONFIG_BYTES:
            raise ConfigurationError(
                f"Model config {path}{where} is not a regular file of at most {MAX_CONFIG_BYTES} bytes."
            )
        return f.read(MAX_CONFIG_BYTES + 1)


def _base_files(path: Path, data: bytes) -> list[str]:
    """The ``_base_`` names of a config, read as mmengine finds them, but without evaluating anything."""
    try:
        tree = ast.parse(data, filename=str(path))
    except (SyntaxError, ValueError) as e:
        raise ConfigurationError(f"Model config {path} is not valid Python ({e}).") from e
    for node in ast.walk(tree):
        if isinstance(node, ast.With) or _imports_beyond_stdlib(node):
            raise ConfigurationError(
                f"Model config {path} uses `with` or imports modules (line {node.lineno}): mmengine's "
                "new-style configs read files that cannot be checked before they run. Write it in the "
                "classic style, with _base_ = [...] naming its base files."
            )
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id == "_base_":
            try:
                value = ast.literal_eval(node.value)
            except ValueError as e:
                raise ConfigurationError(
                    f"Model config {path}: _base_ must be a string or a list of strings, written out."
                ) from e
            names = value if isinstance(value, list) else [value]
            if not all(isinstance(name, str) for name in names):
                raise ConfigurationError(
                    f"Model config {path}: _base_ {value!r} is not a list of file names."
                )
            return names
    return []


def _imports_beyond_stdlib(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] not in sys.stdlib_module_names
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] not in sys.stdlib_module_names for alias in node.names)
    return False


def _base_path(name: str, config: Path) -> Path:
    """Where mmengine reads the ``_base_`` file ``name`` of ``config`` from (``mmaction::...`` too)."""
    if "::" not in name:
        return Path(os.path.join(os.path.dirname(config), name))
    from mmengine.config import Config

    try:
        found, _ = Config._get_cfg_path(name, str(config))  # the package lookup mmengine itself uses
    except Exception as e:  # a package that is not installed, a name that is not in it
        raise ConfigurationError(f"Model config {config}: cannot find its _base_ {name!r} ({e}).") from e
    return Path(found)


def pin_user_model(
    config: str | os.PathLike[str], checkpoint: str, *, pretrained_dir: str | os.PathLike[str]
) -> PinnedModel:
    """Check a user's config and checkpoint as a run will use them, and record their sha256.

    The config is parsed, its network built by mmaction2, and its checkpoint (a file, or an
    ``http(s)`` URL fetched into ``pretrained_dir``) loaded strictly: whatever does not work
    stops here, before anything is queued.

    Raises:
        ConfigurationError: the config cannot be read, is not supported, or mmaction2 cannot build it.
        DependencyError: its backbone cannot run with the installed packages.
        CheckpointError: the checkpoint cannot be fetched or read, or does not fit the config
            (:class:`~vfx_tasks.errors.CheckpointMismatchError`, naming the keys).
    """
    from vfx_tasks.models.backbone import load_backbone  # torch and mmaction2: only where one is pinned

    config_path = Path(config).expanduser().resolve()
    if not config_path.is_file():
        raise ConfigurationError(
            f"Model config {config} does not exist. Give the path of an mmaction2 config file."
        )
    config_sha256 = config_sources_sha256(config_path)
    location = checkpoint if is_url(checkpoint) else str(Path(checkpoint).expanduser().resolve())
    spec = spec_from_config(config_path, location)
    if is_url(location):
        final = Path(pretrained_dir) / spec.checkpoint_filename
        if spec.checkpoint_sha256_prefix is None and final.is_file():
            # Nothing tells whether this file came from this URL: fetch it again.
            final.unlink()
        download_checkpoint(spec, Path(pretrained_dir))
        checkpoint_sha256 = file_sha256(final)
    else:
        checkpoint_sha256 = cached_sha256(checkpoint_path(spec, Path(pretrained_dir)))
    spec = replace(spec, checkpoint_sha256=checkpoint_sha256)
    load_backbone(spec, Path(pretrained_dir))
    return PinnedModel(str(config_path), config_sha256, location, checkpoint_sha256, spec)


@functools.lru_cache(maxsize=32)
def pinned_model_spec(
    config: str, *, config_sha256: str, checkpoint: str, checkpoint_sha256: str
) -> ModelSpec:
    """The spec of a pinned config, read only once its files hash to ``config_sha256``.

    The checkpoint's hash is checked when it is read (:func:`vfx_tasks.models.backbone.load_backbone`)
    or fetched.

    Raises:
        ModelFilesChangedError: the config or a ``_base_`` file changed since the run was queued.
        ConfigurationError, DependencyError: as :func:`~vfx_tasks.models.from_config.spec_from_config`.
    """
    actual = config_sources_sha256(config)
    if actual != config_sha256:
        raise ModelFilesChangedError(
            f"Model config {config} (with its _base_ files) has sha256 {actual[:16]}..., but its run was "
            f"queued with {config_sha256[:16]}...: it changed since. Restore it, or queue the run again "
            "with vfx-enqueue --force to use the new config."
        )
    return replace(spec_from_config(config, checkpoint), checkpoint_sha256=checkpoint_sha256)


def fetch_pinned_checkpoint(spec: ModelSpec, pretrained_dir: str | os.PathLike[str]) -> None:
    """Download a pinned URL checkpoint into ``pretrained_dir`` unless a file with its sha256 is
    there; one process at a time per file (workers of one machine share the folder).

    Raises:
        CheckpointDownloadError: the transfer failed (retried by the queue).
        ChecksumMismatchError: the file fetched is not the one the run pinned; it is deleted.
    """
    if spec.checkpoint_file is not None or not spec.checkpoint_sha256:
        return
    folder = Path(pretrained_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with _file_lock(folder / f"{spec.checkpoint_filename}.lock"):
        download_checkpoint(spec, folder)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
