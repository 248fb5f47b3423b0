"""Rows of a Hub dataset read with the ``datasets`` library: a column naming videos, or Parquet files.

Used by :mod:`vfx_tasks.sources.hub_dataset` and its XD-Violence helper only. ``datasets`` is
imported inside the functions: it is heavy, and ``vfx-enqueue --input_dir`` never needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from vfx_tasks.errors import ConfigurationError, UnsafePathError
from vfx_tasks.sources.base import VideoItem
from vfx_tasks.sources.hub import translate_hub_error
from vfx_tasks.sources.hub_paths import HubFile, parse_location, parse_resolve_url, safe_relative_id

if TYPE_CHECKING:
    from vfx_tasks.sources.hub_dataset import HubDatasetSource

logger = logging.getLogger(__name__)


def rows_with_video_column(source: HubDatasetSource, commit: str, *, column: str) -> Iterator[VideoItem]:
    """Rows of ``source.repo_id`` at ``commit`` as videos named by ``column``; other columns are labels.

    Raises:
        ConfigurationError: the dataset cannot be loaded, or has no such column.
        HubUnavailableError: network trouble or a busy Hub; worth retrying.
    """
    import datasets

    splits = None if source.split == "all" else source.split
    try:
        loaded = datasets.load_dataset(
            source.repo_id, name=source.config, split=splits, revision=commit, streaming=True
        )
    except Exception as e:  # translated: every kind is mapped to permanent or transient
        raise translate_hub_error(e, what=f"Loading {source.repo_id} with datasets", listing=True) from e
    by_split = {source.split: loaded} if splits else dict(loaded)
    for split, rows in by_split.items():
        for row in rows:
            if column not in row:
                raise ConfigurationError(
                    f"Column {column!r} is not in {source.repo_id} (columns: {', '.join(row)}). "
                    "Give the one holding the video path or URL with --hf-video-column."
                )
            item = _row_item(source, row, column=column, split=split, commit=commit)
            if item is not None:
                yield item


def _row_item(
    source: HubDatasetSource, row: Mapping[str, Any], *, column: str, split: str, commit: str
) -> VideoItem | None:
    value = row[column]
    if isinstance(value, Mapping):  # datasets' Video/Value features may hold {"path": ...}
        value = value.get("path")
    text = str(value or "")
    labels = jsonable({key: val for key, val in row.items() if key != column})
    labels["split"] = split
    try:
        if text.startswith("hf://"):
            hub_file = parse_location(text)
        elif "://" in text:
            hub_file = parse_resolve_url(text)
            if hub_file is None:
                logger.warning("Skipping %r: only Hub file URLs (.../resolve/...) can be fetched", text)
                return None
        else:
            hub_file = HubFile(source.repo_id, commit, text)
        if hub_file.repo_id == source.repo_id:
            hub_file = HubFile(source.repo_id, commit, hub_file.path_in_repo)
        relative_id = safe_relative_id(hub_file.path_in_repo)
    except UnsafePathError as e:
        source.rejected.append((text, str(e)))
        logger.warning("%s", e)
        return None
    return VideoItem(relative_id=relative_id, path=hub_file.to_location(), labels=labels)


def parquet_rows(files: list[str]) -> Iterator[Mapping[str, Any]]:
    """Rows of local Parquet files, read through ``datasets`` (streaming: no Arrow cache is written)."""
    import datasets

    yield from datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)


def jsonable(value: Any) -> Any:
    """``value`` with everything JSON cannot hold (bytes, arrays, dates) turned into lists or strings."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    tolist = getattr(value, "tolist", None)
    return jsonable(tolist()) if callable(tolist) else str(value)
