"""Files and rows of a Hub dataset as :class:`VideoItem` s, or as :class:`Rejected` unsafe names.

Used by :mod:`vfx_tasks.sources.hub_dataset` and its XD-Violence helper only. The functions take
the repository, commit and rows they need as arguments and yield what they make of them, unsafe
names included, so that they hold no state: the source collects and logs the rejections.
``datasets`` is imported inside the functions: it is heavy, and ``vfx-enqueue --input_dir`` never
needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from vfx_tasks.errors import ConfigurationError, UnsafePathError
from vfx_tasks.sources.base import Rejected, VideoItem
from vfx_tasks.sources.hub import translate_hub_error
from vfx_tasks.sources.hub_paths import HubFile, parse_location, parse_resolve_url, safe_relative_id

logger = logging.getLogger(__name__)


def hub_video_item(
    repo_id: str,
    commit: str,
    path_in_repo: str,
    *,
    strip_prefix: str = "",
    labels: Mapping[str, Any] | None = None,
) -> VideoItem | Rejected:
    """The item of file ``path_in_repo`` of ``repo_id`` at ``commit``, or why its name is unsafe."""
    try:
        relative_id = safe_relative_id(path_in_repo, strip_prefix=strip_prefix)
    except UnsafePathError as e:
        return Rejected(path_in_repo, str(e))
    location = HubFile(repo_id, commit, path_in_repo).to_location()
    return VideoItem(relative_id=relative_id, path=location, labels=labels)


def rows_with_video_column(
    repo_id: str, commit: str, *, column: str, split: str, config: str | None
) -> Iterator[VideoItem | Rejected]:
    """Rows of ``repo_id`` at ``commit`` (``split`` or ``"all"``) as videos named by ``column``.

    Raises:
        ConfigurationError: the dataset cannot be loaded, or has no such column.
        HubUnavailableError: network trouble or a busy Hub; worth retrying.
    """
    import datasets

    splits = None if split == "all" else split
    try:
        loaded = datasets.load_dataset(repo_id, name=config, split=splits, revision=commit, streaming=True)
    except Exception as e:  # translated: every kind is mapped to permanent or transient
        raise translate_hub_error(e, what=f"Loading {repo_id} with datasets", listing=True) from e
    by_split = {split: loaded} if splits else dict(loaded)
    for split_name, rows in by_split.items():
        yield from items_from_rows(rows, repo_id=repo_id, commit=commit, column=column, split=split_name)


def items_from_rows(
    rows: Iterable[Mapping[str, Any]], *, repo_id: str, commit: str, column: str, split: str
) -> Iterator[VideoItem | Rejected]:
    """The videos ``column`` names in ``rows`` of ``split``; the other columns become the labels.

    A value is a path in ``repo_id`` (pinned to ``commit``), an ``hf://`` location or a Hub file
    URL; other URLs are skipped with a warning.

    Raises:
        ConfigurationError: a row has no such column.
    """
    for row in rows:
        if column not in row:
            raise ConfigurationError(
                f"Column {column!r} is not in {repo_id} (columns: {', '.join(row)}). "
                "Give the one holding the video path or URL with --hf-video-column."
            )
        item = _row_item(row, repo_id=repo_id, commit=commit, column=column, split=split)
        if item is not None:
            yield item


def _row_item(
    row: Mapping[str, Any], *, repo_id: str, commit: str, column: str, split: str
) -> VideoItem | Rejected | None:
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
            hub_file = HubFile(repo_id, commit, text)
        if hub_file.repo_id == repo_id:
            hub_file = HubFile(repo_id, commit, hub_file.path_in_repo)
        relative_id = safe_relative_id(hub_file.path_in_repo)
    except UnsafePathError as e:
        return Rejected(text, str(e))
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
