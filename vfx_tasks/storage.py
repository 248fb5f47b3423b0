"""Where features go and when a video counts as done on disk.

Layout: ``<output_dir>/<relative_dir>/<video_id>.npy``, as the original tool. Files are written
to a temporary name in the same folder and renamed into place, so a reader never sees a partial
file and two workers racing on one video just replace the same bytes.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np

from vfx_tasks.errors import OutputError

logger = logging.getLogger(__name__)

#: Temporary files start with this prefix, so that leftovers of a killed writer can be found.
TEMP_PREFIX = ".vfx-tmp-"
TEMP_SUFFIX = ".npy.part"
#: The labels' temporary files: a writer killed between labels and features leaves one of these.
LABELS_TEMP_SUFFIX = ".json.part"
#: Other text files' temporaries (the index rebuilt by ``vfx-status --write-index``).
TEXT_TEMP_SUFFIX = ".txt.part"
#: Every kind of temporary file a writer here leaves when it is killed mid-write.
_TEMP_SUFFIXES = (TEMP_SUFFIX, LABELS_TEMP_SUFFIX, TEXT_TEMP_SUFFIX)


def output_path(output_dir: str | os.PathLike[str], relative_id: str) -> Path:
    """``<output_dir>/<relative_dir>/<video_id>.npy`` for ``relative_id = "<relative_dir>/<video_id>"``."""
    relative = PurePosixPath(relative_id)
    if relative.is_absolute() or ".." in relative.parts:
        raise OutputError(f"Invalid relative id ({relative_id!r}): it must stay inside the output folder.")
    return Path(output_dir, *relative.parts).with_name(relative.name + ".npy")


def write_features_atomic(path: str | os.PathLike[str], features: np.ndarray) -> None:
    """Save ``features`` as ``.npy`` at ``path`` through a temporary file and ``os.replace``.

    Raises:
        OutputError: the folder cannot be created or the file cannot be written.
    """

    def save(f: BinaryIO) -> None:
        np.save(f, np.ascontiguousarray(features), allow_pickle=False)

    _write_atomic(Path(path), save, what="features", temp_suffix=TEMP_SUFFIX)


def labels_path(output_dir: str | os.PathLike[str], relative_id: str) -> Path:
    """``<output_dir>/<relative_dir>/<video_id>.json``: the labels beside the features."""
    return output_path(output_dir, relative_id).with_suffix(".json")


def write_labels_atomic(path: str | os.PathLike[str], labels: Mapping[str, Any]) -> None:
    """Save ``labels`` as UTF-8 JSON at ``path`` through a temporary file and ``os.replace``.

    Raises:
        OutputError: the folder cannot be created or the file cannot be written.
    """

    def save(f: BinaryIO) -> None:
        text = json.dumps(labels, ensure_ascii=False, indent=1, sort_keys=True) + "\n"
        f.write(text.encode("utf-8"))

    _write_atomic(Path(path), save, what="labels", temp_suffix=LABELS_TEMP_SUFFIX)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, what: str = "text") -> None:
    """Save ``text`` as UTF-8 at ``path`` through a temporary file and ``os.replace``.

    Raises:
        OutputError: the folder cannot be created or the file cannot be written.
    """
    def save(f: BinaryIO) -> None:
        f.write(text.encode("utf-8"))

    _write_atomic(Path(path), save, what=what, temp_suffix=TEXT_TEMP_SUFFIX)


def _write_atomic(path: Path, save: Callable[[BinaryIO], None], *, what: str, temp_suffix: str) -> None:
    """Write through ``save`` into a temporary file beside ``path``, sync it, rename it into place."""
    tmp_name: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        prefix = TEMP_PREFIX + path.stem + "."
        fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=temp_suffix, dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            save(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as e:
        raise OutputError(f"Cannot write {what} to {path}: {e}. Check free space and permissions.") from e
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)


def read_npy_header(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype from a ``.npy`` header, or ``None`` when the file is missing or not a full ``.npy``."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            major, _minor = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            )
            shape, fortran_order, dtype = read_header(f)
            data_start = f.tell()
    except (OSError, ValueError):
        return None
    if fortran_order or size != data_start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        return None  # truncated or padded: not something we wrote
    return tuple(shape), dtype


def is_valid_output(
    path: str | os.PathLike[str],
    *,
    n_crops: int,
    feature_dim: int,
    num_clips_per_video: int = -1,
) -> bool:
    """Whether ``path`` holds complete ``(num_clips, n_crops, feature_dim)`` float32 features.

    Only the header and the file size are read, so checking 100,000 outputs stays cheap.
    """
    header = read_npy_header(path)
    if header is None:
        return False
    shape, dtype = header
    if dtype != np.float32 or len(shape) != 3 or shape[0] < 1 or shape[1:] != (n_crops, feature_dim):
        return False
    return num_clips_per_video == -1 or shape[0] == num_clips_per_video


def find_temp_files(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Temporary files left under ``output_dir`` by writers that were killed mid-write."""
    found = [
        p
        for suffix in _TEMP_SUFFIXES
        for p in Path(output_dir).rglob(TEMP_PREFIX + "*" + suffix)
        if p.is_file()
    ]
    return sorted(found)


def remove_temp_files_of(output_dir: str | os.PathLike[str], relative_id: str) -> list[Path]:
    """Delete the temporary files of one video's outputs (features, labels); return them.

    For a video whose earlier attempt died mid-write: call it only when no other writer of the
    same video can be running.
    """
    destination = output_path(output_dir, relative_id)
    leftovers = [
        p
        for suffix in _TEMP_SUFFIXES
        for p in destination.parent.glob(f"{TEMP_PREFIX}{glob.escape(destination.stem)}.*{suffix}")
        if p.is_file()
    ]
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return leftovers


def remove_temp_files(output_dir: str | os.PathLike[str]) -> int:
    """Delete what :func:`find_temp_files` finds; return how many. Only safe while no writer runs."""
    leftovers = find_temp_files(output_dir)
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
        logger.info("Removed partial file %s", leftover)
    return len(leftovers)
