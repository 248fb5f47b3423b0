"""What goes into an output folder and how it is read back: features (``.npy``), JSON and text.

Every write goes through the folder's atomic write (a temporary file renamed into place), so a
reader never sees a partial file and two workers racing on one video just replace the same
bytes. Every read goes through the folder's bounded, link-refusing open.
"""

from __future__ import annotations

import io
import json
import math
import sys
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from vfx_tasks.errors import ConfigurationError, OutputError, UnsafeFileError
from vfx_tasks.storage.folders import Folder
from vfx_tasks.storage.names import LABELS_TEMP_SUFFIX, TEMP_SUFFIX, TEXT_TEMP_SUFFIX

NpyHeader = tuple[tuple[int, ...], np.dtype]
#: A feature file's size is checked against its header instead: any size its header accounts for.
_ANY_SIZE = sys.maxsize


def write_features(
    folder: Folder, name: str, features: np.ndarray, *, mtime_ns: int | None = None
) -> None:
    """Save ``features`` as ``.npy`` at ``name`` in ``folder``, atomically.

    Raises:
        UnsafeFileError: a folder on the way is a link.
        OutputError: the file cannot be written.
    """

    def save(f: BinaryIO) -> None:
        np.save(f, np.ascontiguousarray(features), allow_pickle=False)

    folder.write_atomic(name, save, what="features", temp_suffix=TEMP_SUFFIX, mtime_ns=mtime_ns)


def encode_json(data: Mapping[str, Any]) -> bytes:
    """``data`` as this package writes JSON files: UTF-8, sorted keys, one space of indent."""
    return (json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True) + "\n").encode("utf-8")


def write_json(folder: Folder, name: str, data: Mapping[str, Any], *, what: str = "labels") -> None:
    """Save ``data`` as UTF-8 JSON (sorted keys, one space of indent) at ``name``, atomically."""

    def save(f: BinaryIO) -> None:
        f.write(encode_json(data))

    folder.write_atomic(name, save, what=what, temp_suffix=LABELS_TEMP_SUFFIX)


def write_text(folder: Folder, name: str, text: str, *, what: str = "text") -> None:
    """Save ``text`` as UTF-8 at ``name``, atomically."""

    def save(f: BinaryIO) -> None:
        f.write(text.encode("utf-8"))

    folder.write_atomic(name, save, what=what, temp_suffix=TEXT_TEMP_SUFFIX)


def read_json(folder: Folder, name: str, *, limit: int, what: str) -> Any:
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


def npy_header(folder: Folder, name: str) -> NpyHeader | None:
    """Shape and dtype of a complete ``.npy`` at ``name``; ``None`` when missing, incomplete, a link
    or not a regular file (a link is then replaced, never followed, by the next write)."""
    try:
        with folder.open_regular(name, limit=_ANY_SIZE) as f:
            return None if f is None else _header(f)[0]
    except (UnsafeFileError, OutputError):
        return None


def read_features(folder: Folder, name: str) -> np.ndarray:
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
        array = np.empty(math.prod(header[0]), dtype=header[1])
        try:
            _read_into(f, memoryview(array).cast("B"))
        except (OSError, ValueError) as e:
            raise OutputError(f"Cannot read {folder.path / name}: {e}.") from e
    return array.reshape(header[0])


def _read_into(f: BinaryIO, buffer: memoryview) -> None:
    """Fill ``buffer`` from ``f`` (a local file or an object read by ranges); short means damaged."""
    filled = 0
    while filled < len(buffer):
        got = f.readinto(buffer[filled:])  # type: ignore[attr-defined]
        if not got:
            raise OSError(f"the file ended after {filled} of {len(buffer)} bytes")
        filled += got


def _header(f: BinaryIO) -> tuple[NpyHeader | None, int]:
    """The header of the open ``.npy`` ``f`` if its size is what the header says; where its data starts."""
    try:
        size = f.seek(0, io.SEEK_END)
        f.seek(0)
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


def header_from_size(
    size: int, *, n_crops: int, feature_dim: int, num_clips_per_video: int = -1
) -> NpyHeader | None:
    """The header of the ``(num_clips, n_crops, feature_dim)`` float32 ``.npy`` that ``np.save``
    writes in exactly ``size`` bytes, or ``None`` when no clip count gives that size.

    For a listing of object storage, where sizes come free and headers cost a request each: an
    object is never partial (one PUT), so a size that fits is a complete file of the right shape.
    """
    clip_bytes = n_crops * feature_dim * 4
    if clip_bytes <= 0:
        return None
    counts = [num_clips_per_video] if num_clips_per_video != -1 else None
    # np.save pads its header to a multiple of 64 bytes; a few sizes cover every clip count.
    for header_bytes in range(64, 64 * 8, 64):
        clips = (size - header_bytes) // clip_bytes
        if clips < 1 or header_bytes + clips * clip_bytes != size or (counts and clips not in counts):
            continue
        shape = (clips, n_crops, feature_dim)
        if _header_bytes(shape) == header_bytes:
            return shape, np.dtype(np.float32)
    return None


def _header_bytes(shape: tuple[int, ...]) -> int:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": shape}
    )
    return out.tell()


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
