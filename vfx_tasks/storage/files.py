"""What goes into an output folder and how it is read back: features (``.npy``), JSON and text.

Every write goes through the folder's atomic write (a temporary file renamed into place), so a
reader never sees a partial file and two workers racing on one video just replace the same
bytes. Every read goes through the folder's bounded, link-refusing open.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from vfx_tasks.errors import ConfigurationError, OutputError, UnsafeFileError
from vfx_tasks.storage.local import LocalFolder
from vfx_tasks.storage.names import LABELS_TEMP_SUFFIX, TEMP_SUFFIX, TEXT_TEMP_SUFFIX

NpyHeader = tuple[tuple[int, ...], np.dtype]
#: A feature file's size is checked against its header instead: any size its header accounts for.
_ANY_SIZE = sys.maxsize


def write_features(
    folder: LocalFolder, name: str, features: np.ndarray, *, mtime_ns: int | None = None
) -> None:
    """Save ``features`` as ``.npy`` at ``name`` in ``folder``, atomically.

    Raises:
        UnsafeFileError: a folder on the way is a link.
        OutputError: the file cannot be written.
    """

    def save(f: BinaryIO) -> None:
        np.save(f, np.ascontiguousarray(features), allow_pickle=False)

    folder.write_atomic(name, save, what="features", temp_suffix=TEMP_SUFFIX, mtime_ns=mtime_ns)


def write_json(folder: LocalFolder, name: str, data: Mapping[str, Any], *, what: str = "labels") -> None:
    """Save ``data`` as UTF-8 JSON (sorted keys, one space of indent) at ``name``, atomically."""

    def save(f: BinaryIO) -> None:
        text = json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True) + "\n"
        f.write(text.encode("utf-8"))

    folder.write_atomic(name, save, what=what, temp_suffix=LABELS_TEMP_SUFFIX)


def write_text(folder: LocalFolder, name: str, text: str, *, what: str = "text") -> None:
    """Save ``text`` as UTF-8 at ``name``, atomically."""

    def save(f: BinaryIO) -> None:
        f.write(text.encode("utf-8"))

    folder.write_atomic(name, save, what=what, temp_suffix=TEXT_TEMP_SUFFIX)


def read_json(folder: LocalFolder, name: str, *, limit: int, what: str) -> Any:
    """The JSON value in ``name`` (at most ``limit`` bytes), or ``None`` when it is missing.

    Raises:
        UnsafeFileError: a link, not a regular file, or larger than ``limit``.
        ConfigurationError: not valid UTF-8 JSON, or nested too deep for Python's parser.
        OutputError: it cannot be read.
    """
    data = folder.read_bytes(name, limit=limit)
    if data is None:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        problem = "nested too deep" if isinstance(e, RecursionError) else str(e)
        raise ConfigurationError(
            f"{folder.path / name} is not valid JSON {what} ({problem}). Move it away or write it again."
        ) from e


def npy_header(folder: LocalFolder, name: str) -> NpyHeader | None:
    """Shape and dtype of a complete ``.npy`` at ``name``; ``None`` when missing, incomplete, a link
    or not a regular file (a link is then replaced, never followed, by the next write)."""
    try:
        with folder.open_regular(name, limit=_ANY_SIZE) as f:
            return None if f is None else _header(f)[0]
    except (UnsafeFileError, OutputError):
        return None


def read_features(folder: LocalFolder, name: str) -> np.ndarray:
    """The array in the complete ``.npy`` at ``name``.

    Raises:
        UnsafeFileError: a link or not a regular file.
        OutputError: missing, incomplete (its size is not what its header says) or unreadable.
    """
    with folder.open_regular(name, limit=_ANY_SIZE) as f:
        if f is None:
            raise OutputError(f"{folder.path / name} is missing: it was removed meanwhile? Run again.")
        header, data_start = _header(f)
        if header is None:
            raise OutputError(f"{folder.path / name} is not a complete .npy file. Compute it again.")
        f.seek(data_start)
        try:
            array = np.fromfile(f, dtype=header[1], count=math.prod(header[0]))
        except (OSError, ValueError) as e:
            raise OutputError(f"Cannot read {folder.path / name}: {e}.") from e
    return array.reshape(header[0])


def _header(f: BinaryIO) -> tuple[NpyHeader | None, int]:
    """The header of the open ``.npy`` ``f`` if its size is what the header says; where its data starts."""
    size = os.fstat(f.fileno()).st_size
    try:
        major, _minor = np.lib.format.read_magic(f)
        fmt = np.lib.format
        read_header = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
        data_start = f.tell()
    except (OSError, ValueError):
        return None, 0
    if fortran_order or dtype.hasobject:
        return None, 0  # not something we wrote
    if size != data_start + math.prod(shape) * dtype.itemsize:
        return None, 0  # truncated or padded
    return (tuple(shape), dtype), data_start


def features_match(
    header: NpyHeader | None, *, n_crops: int, feature_dim: int, num_clips_per_video: int = -1
) -> bool:
    """Whether ``header`` describes complete ``(num_clips, n_crops, feature_dim)`` float32 features."""
    if header is None:
        return False
    shape, dtype = header
    if dtype != np.float32 or len(shape) != 3 or shape[0] < 1 or shape[1:] != (n_crops, feature_dim):
        return False
    return num_clips_per_video == -1 or shape[0] == num_clips_per_video
