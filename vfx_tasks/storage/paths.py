"""The same operations for a caller that holds a path, not an open folder (the producer, tests).

Each opens the folder holding the path (links in that path followed: the caller chose it), then
goes through :class:`~vfx_tasks.storage.local.LocalFolder`, so the file itself is never reached
through a link. A worker, whose paths come from untrusted messages, opens its folder once instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vfx_tasks.errors import OutputError
from vfx_tasks.storage.files import (
    NpyHeader,
    features_match,
    npy_header,
    write_features,
    write_json,
    write_text,
)
from vfx_tasks.storage.local import LocalFolder
from vfx_tasks.storage.names import features_name, is_temp_name

logger = logging.getLogger(__name__)


def _folder_of(path: Path, *, what: str) -> LocalFolder:
    try:
        return LocalFolder.open(path.parent, create=True)
    except OutputError as e:
        raise OutputError(
            f"Cannot write {what} to {path}: {e.__cause__}. Check free space and permissions."
        ) from e


def write_features_atomic(path: str | os.PathLike[str], features: np.ndarray) -> None:
    """Save ``features`` as ``.npy`` at ``path`` through a temporary file and ``os.replace``.

    Raises:
        OutputError: the folder cannot be created or the file cannot be written.
    """
    with _folder_of(Path(path), what="features") as folder:
        write_features(folder, Path(path).name, features)


def write_labels_atomic(path: str | os.PathLike[str], labels: Mapping[str, Any]) -> None:
    """Save ``labels`` as UTF-8 JSON at ``path`` through a temporary file and ``os.replace``."""
    with _folder_of(Path(path), what="labels") as folder:
        write_json(folder, Path(path).name, labels)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, what: str = "text") -> None:
    """Save ``text`` as UTF-8 at ``path`` through a temporary file and ``os.replace``."""
    with _folder_of(Path(path), what=what) as folder:
        write_text(folder, Path(path).name, text, what=what)


def read_npy_header(path: str | os.PathLike[str]) -> NpyHeader | None:
    """Shape and dtype from a ``.npy`` header, or ``None`` when the file is missing, a link, or not
    a full ``.npy``."""
    path = Path(path)
    try:
        folder = LocalFolder.open(path.parent)
    except OutputError:
        return None
    with folder:
        return npy_header(folder, path.name)


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
    return features_match(
        read_npy_header(path), n_crops=n_crops, feature_dim=feature_dim,
        num_clips_per_video=num_clips_per_video,
    )


def find_temp_files(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Temporary files left under ``output_dir`` by writers that were killed mid-write."""
    try:
        folder = LocalFolder.open(output_dir)
    except OutputError:
        return []
    with folder:
        return [Path(output_dir, name) for name, is_link in folder.walk()
                if not is_link and is_temp_name(name.rsplit("/", 1)[-1])]


def remove_temp_files_of(output_dir: str | os.PathLike[str], relative_id: str) -> list[Path]:
    """Delete the temporary files of one video's outputs (features, labels); return them.

    For a video whose earlier attempt died mid-write: call it only when no other writer of the
    same video can be running.
    """
    try:
        folder = LocalFolder.open(output_dir)
    except OutputError:
        return []
    with folder:
        return [Path(output_dir, name) for name in folder.remove_temp_files(of=features_name(relative_id))]


def remove_temp_files(output_dir: str | os.PathLike[str]) -> int:
    """Delete what :func:`find_temp_files` finds; return how many. Only safe while no writer runs."""
    try:
        folder = LocalFolder.open(output_dir)
    except OutputError:
        return 0
    with folder:
        removed = folder.remove_temp_files()
    for name in removed:
        logger.info("Removed partial file %s", Path(output_dir, name))
    return len(removed)
