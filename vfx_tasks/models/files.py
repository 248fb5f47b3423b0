"""Checkpoint files on disk, without torch: where a model's file is, and its sha256.

The producer and the command line check and hash checkpoints without loading torch; reading one
(:mod:`vfx_tasks.models.checkpoint`) is the worker's business.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from vfx_tasks.errors import CheckpointNotFoundError
from vfx_tasks.models.spec import ModelSpec


def checkpoint_path(spec: ModelSpec, pretrained_dir: Path) -> Path:
    """Return the path of ``spec``'s checkpoint in ``pretrained_dir`` (or of a user's own file).

    Raises:
        CheckpointNotFoundError: the file is not there; the message says how to get it.
    """
    if spec.checkpoint_file is not None:
        path = Path(spec.checkpoint_file)
        if not path.is_file():
            raise CheckpointNotFoundError(
                f"Checkpoint {path} for model {spec.name!r} does not exist. Give the path of the "
                "weights that belong to its config (--checkpoint), or their http(s) URL."
            )
        return path
    path = Path(pretrained_dir) / spec.checkpoint_filename
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"Checkpoint for model {spec.name!r} not found at {path}. Download it with "
            f"`curl -L -o {path} {spec.checkpoint_url}` (or `vfx-download-models`), or point "
            "--pretrained-dir / VFX_PRETRAINED_DIR at the folder that holds it."
        )
    return path


def file_sha256(path: Path, *, chunk_bytes: int = 1 << 20) -> str:
    """Return the hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def cached_sha256(path: Path) -> str:
    """:func:`file_sha256`, computed once per process for each (path, size, modification time)."""
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@cache
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))
