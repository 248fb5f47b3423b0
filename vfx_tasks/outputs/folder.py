"""What an output folder holds besides its manifest and index: feature files, and labels beside them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vfx_tasks.errors import ConfigurationError, UnsafeFileError
from vfx_tasks.storage import (
    FolderLike,
    folder_exists,
    labels_name,
    open_folder,
    read_json,
    reserved_name_problem,
)

#: A worker writes at most 1 MiB of labels as compact JSON (the message's bound); indented they grow.
MAX_LABELS_FILE_BYTES = 16 << 20


def iter_feature_files(output_dir: FolderLike) -> Iterator[str]:
    """The relative id of every ``.npy`` under the folder, sorted; temporary and hidden files left out.

    Raises:
        UnsafeFileError: a link among them (a file or a folder): its target could be anywhere.
    """
    yield from sorted(_feature_files(output_dir))


def _feature_files(output_dir: FolderLike) -> Iterator[str]:
    if not folder_exists(output_dir):
        return
    with open_folder(output_dir) as folder:
        for name, is_link in folder.walk():
            parts = name.split("/")
            if any(part.startswith(".") for part in parts):
                continue  # temporary files (TEMP_PREFIX) and hidden folders
            if is_link:
                raise UnsafeFileError(
                    f"{folder.path / name} is a symbolic link; an output folder's files must be the files "
                    "themselves (a link could lead anywhere). Replace it with its target, or remove it."
                )
            if name.endswith(".npy"):
                yield name[: -len(".npy")]


def read_labels(output_dir: FolderLike, relative_id: str) -> dict[str, Any] | None:
    """The labels written beside a video's features, or ``None``.

    Raises:
        UnsafeFileError: the labels file is a link, not a regular file, or too big.
        ConfigurationError: not a JSON object.
    """
    if reserved_name_problem(relative_id) is not None or not folder_exists(output_dir):
        return None  # vfx-run.json is the manifest, not a video's labels
    name = labels_name(relative_id)
    with open_folder(output_dir) as folder:
        labels = read_json(folder, name, limit=MAX_LABELS_FILE_BYTES, what="labels")
        if labels is not None and not isinstance(labels, dict):
            raise ConfigurationError(
                f"{folder.path / name} holds {type(labels).__name__} JSON, not the object labels are. "
                "Move it away or write it again."
            )
    return labels
