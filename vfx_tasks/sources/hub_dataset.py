"""Videos of a Hugging Face dataset repository, listed without any loading script.

Three ways, tried in this order:

* ``video_column`` given: rows from ``datasets.load_dataset`` (a script-free repository: Parquet,
  CSV, JSON...), each carrying a video as a repo-relative path or a Hub file URL; the other
  columns become the labels.
* ``jherng/xd-violence``: the Hub's Parquet export of its ``video`` config (branch
  ``refs/convert/parquet``) read with ``datasets`` when the Hub serves one; otherwise the video
  files under ``data/video/<range>/`` listed with ``huggingface_hub``, labels parsed from the file
  names and ``data/test_annotations.txt`` as the old loading script did. Relative ids are
  ``<range>/<id>``, as the original tool wrote them, so its output and progress files resume.
* any other repository: every video file (or every file matching ``pattern``), relative id = its
  path in the repository without the extension.

The revision is resolved to a commit once, and every location is pinned to it, so workers fetch
the bytes that were listed. Remote names pass :func:`~vfx_tasks.sources.hub_paths.safe_relative_id`;
unsafe ones are skipped with a warning and kept in :attr:`HubDatasetSource.rejected`.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any, Literal

from vfx_tasks.errors import ConfigurationError, DependencyError, UnsafePathError, VfxError
from vfx_tasks.extract.video import VIDEO_EXTENSIONS
from vfx_tasks.sources._xd_violence import (
    XD_CONFIG,
    XD_TEST_ANNOTATIONS,
    XD_TEST_RANGE,
    XD_VIDEO_PREFIX,
    XD_VIOLENCE,
    parse_frame_annotations,
    xd_violence_labels,
)
from vfx_tasks.sources.base import VideoItem
from vfx_tasks.sources.hub import import_huggingface_hub, translate_hub_error
from vfx_tasks.sources.hub_paths import (
    HubFile,
    parse_location,
    parse_resolve_url,
    safe_relative_id,
    validate_repo_id,
)

logger = logging.getLogger(__name__)

Split = Literal["train", "test", "all"]
SPLITS: tuple[str, ...] = ("train", "test", "all")
__all__ = ["SPLITS", "HubDatasetSource", "parse_frame_annotations", "xd_violence_labels"]

#: Branch where the Hub keeps its Parquet export of a dataset.
PARQUET_REVISION = "refs/convert/parquet"


class HubDatasetSource:
    """The videos of dataset repository ``repo_id`` at ``revision`` (see the module docstring)."""

    def __init__(
        self,
        repo_id: str,
        *,
        split: Split = "all",
        revision: str = "main",
        pattern: str | None = None,
        video_column: str | None = None,
        config: str | None = None,
        use_parquet_export: bool = True,
        endpoint: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.repo_id = validate_repo_id(repo_id)
        if split not in SPLITS:
            raise ConfigurationError(f"Invalid split ({split!r}). Supported values are {', '.join(SPLITS)}.")
        self.split = split
        self.revision = revision
        self.pattern = pattern
        self.video_column = video_column
        self.config = config
        self.use_parquet_export = use_parquet_export
        self.endpoint = endpoint
        self.cache_dir = cache_dir
        #: ``(remote path, reason)`` of the files left out because their names are unsafe.
        self.rejected: list[tuple[str, str]] = []
        #: How the videos were listed: ``"datasets"``, ``"parquet-export"``, ``"file-listing"``.
        self.listed_with: str | None = None
        self._commit: str | None = None

    def __repr__(self) -> str:
        return f"HubDatasetSource({self.repo_id!r}, split={self.split!r}, revision={self.revision!r})"

    @property
    def is_xd_violence(self) -> bool:
        return self.repo_id.lower() == XD_VIOLENCE and self.video_column is None

    def _api(self) -> Any:
        return import_huggingface_hub().HfApi(endpoint=self.endpoint)

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = function(*args, **kwargs)
            return list(result) if isinstance(result, Iterator) else result
        except VfxError:
            raise
        except Exception as e:  # noqa: BLE001 (every huggingface_hub error is translated)
            raise translate_hub_error(e, what=what, listing=True) from e

    def resolve_commit(self) -> str:
        """The commit ``revision`` names now (asked once; every location is pinned to it)."""
        if self._commit is None:
            info = self._call(
                f"Dataset {self.repo_id} at revision {self.revision!r}",
                self._api().dataset_info,
                self.repo_id,
                revision=self.revision,
            )
            if not info.sha:
                raise ConfigurationError(
                    f"The Hub did not say which commit {self.revision!r} of {self.repo_id} is."
                )
            self._commit = str(info.sha)
        return self._commit

    def iter_videos(self) -> Iterator[VideoItem]:
        commit = self.resolve_commit()
        if self.video_column is not None:
            self.listed_with = "datasets"
            found = self._rows_with_video_column(commit)
        elif self.is_xd_violence:
            found = self._xd_violence_items(commit)
        else:
            self.listed_with = "file-listing"
            found = self._repository_files(commit)
        seen: set[str] = set()
        for item in sorted(found, key=lambda item: item.relative_id):
            if item.relative_id in seen:
                logger.warning(
                    "Skipping %s: another video already has the id %r", item.path, item.relative_id
                )
                continue
            seen.add(item.relative_id)
            yield item

    # -- listing files -------------------------------------------------------------------------

    def _list_files(self, commit: str, folder: str | None) -> list[str]:
        entries = self._call(
            f"Listing {folder or 'the files'} of {self.repo_id}@{commit}",
            self._api().list_repo_tree,
            self.repo_id,
            path_in_repo=folder,
            recursive=True,
            revision=commit,
            repo_type="dataset",
        )
        return sorted(entry.path for entry in entries if type(entry).__name__ == "RepoFile")

    def _item(
        self,
        path_in_repo: str,
        commit: str,
        *,
        strip_prefix: str = "",
        labels: Mapping[str, Any] | None = None,
    ) -> VideoItem | None:
        try:
            relative_id = safe_relative_id(path_in_repo, strip_prefix=strip_prefix)
        except UnsafePathError as e:
            logger.warning("%s", e)
            self.rejected.append((path_in_repo, str(e)))
            return None
        location = HubFile(self.repo_id, commit, path_in_repo).to_location()
        return VideoItem(relative_id=relative_id, path=location, labels=labels)

    def _repository_files(self, commit: str) -> Iterator[VideoItem]:
        for path in self._list_files(commit, None):
            if self.pattern is not None:
                if not fnmatch.fnmatchcase(path, self.pattern):
                    continue
            elif PurePosixPath(path).suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            if self.split != "all" and self.split not in path.split("/")[:-1]:
                continue
            item = self._item(path, commit)
            if item is not None:
                yield item

    # -- XD-Violence ---------------------------------------------------------------------------

    def _xd_violence_items(self, commit: str) -> Iterable[VideoItem]:
        if self.use_parquet_export:
            items = self._xd_violence_from_parquet_export(commit)
            if items is not None:
                self.listed_with = "parquet-export"
                return items
        self.listed_with = "file-listing"
        return self._xd_violence_from_files(commit)

    def _xd_violence_from_files(self, commit: str) -> list[VideoItem]:
        annotations: dict[str, list[dict[str, int]]] = {}
        if self.split in ("test", "all"):
            annotations = self._read_test_annotations(commit)
        items = []
        for path in self._list_files(commit, XD_VIDEO_PREFIX.rstrip("/")):
            relative = path[len(XD_VIDEO_PREFIX) :]
            if "/" not in relative or PurePosixPath(path).suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            if self.pattern is not None and not fnmatch.fnmatchcase(path, self.pattern):
                continue
            video_range = relative.split("/", 1)[0]
            split = "test" if video_range == XD_TEST_RANGE else "train"
            if self.split not in ("all", split):
                continue
            video_id = PurePosixPath(path).stem
            labels = {
                "id": video_id,
                "split": split,
                **xd_violence_labels(video_id),
                "frame_annotations": annotations.get(video_id, []),
            }
            item = self._item(path, commit, strip_prefix=XD_VIDEO_PREFIX, labels=labels)
            if item is not None:
                items.append(item)
        return items

    def _read_test_annotations(self, commit: str) -> dict[str, list[dict[str, int]]]:
        hf = import_huggingface_hub()
        try:
            path = hf.hf_hub_download(
                self.repo_id,
                XD_TEST_ANNOTATIONS,
                repo_type="dataset",
                revision=commit,
                cache_dir=self.cache_dir,
                endpoint=self.endpoint,
            )
        except Exception as e:  # noqa: BLE001 (labels are a bonus: a missing file must not stop the run)
            logger.warning("No frame annotations for the test videos (%s: %s)", type(e).__name__, e)
            return {}
        with open(path, encoding="utf-8") as f:
            return parse_frame_annotations(f.read())

    def _xd_violence_from_parquet_export(self, commit: str) -> list[VideoItem] | None:
        """Rows of the Hub's Parquet export of the ``video`` config, or ``None`` if it serves none."""
        from huggingface_hub import errors as hf_errors

        api = self._api()
        config = self.config or XD_CONFIG
        try:
            export = api.dataset_info(self.repo_id, revision=PARQUET_REVISION)
            entries = list(
                api.list_repo_tree(
                    self.repo_id,
                    path_in_repo=config,
                    recursive=True,
                    revision=export.sha,
                    repo_type="dataset",
                )
            )
        except (hf_errors.RevisionNotFoundError, hf_errors.RemoteEntryNotFoundError):
            logger.info("%s has no Parquet export of %r; listing its video files", self.repo_id, config)
            return None
        except Exception as e:  # noqa: BLE001
            raise translate_hub_error(e, what=f"Parquet export of {self.repo_id}", listing=True) from e
        by_split: dict[str, list[str]] = {}
        for entry in entries:
            parts = entry.path.split("/")
            if len(parts) == 3 and parts[2].endswith(".parquet"):
                by_split.setdefault(parts[1], []).append(entry.path)
        if not by_split:
            return None
        if any(split.startswith("partial-") for split in by_split):
            # A partial export holds only the first rows of a split: listing the files misses nothing.
            logger.info("The Parquet export of %s is partial; listing its video files instead", self.repo_id)
            return None
        wanted = [s for s in sorted(by_split) if self.split in ("all", s)]
        hf = import_huggingface_hub()
        items: list[VideoItem] = []
        for split in wanted:
            files = [
                self._call(
                    f"Fetching {path} of the Parquet export",
                    hf.hf_hub_download,
                    self.repo_id,
                    path,
                    repo_type="dataset",
                    revision=export.sha,
                    cache_dir=self.cache_dir,
                    endpoint=self.endpoint,
                )
                for path in sorted(by_split[split])
            ]
            for row in _parquet_rows(files):
                item = self._xd_violence_row(row, split=split, commit=commit)
                if item is not None:
                    items.append(item)
        return items

    def _xd_violence_row(self, row: Mapping[str, Any], *, split: str, commit: str) -> VideoItem | None:
        url = str(row.get("path") or "")
        try:
            hub_file = parse_resolve_url(url)
        except UnsafePathError as e:
            self.rejected.append((url, str(e)))
            logger.warning("%s", e)
            return None
        if hub_file is None or not hub_file.path_in_repo.startswith(XD_VIDEO_PREFIX):
            logger.warning("Skipping row %r: its path %r is not a data/video/ file URL", row.get("id"), url)
            return None
        labels = {
            "id": row.get("id") or PurePosixPath(hub_file.path_in_repo).stem,
            "split": split,
            "binary_target": row.get("binary_target"),
            "multilabel_targets": row.get("multilabel_targets", row.get("multilabel_target")),
            "frame_annotations": row.get("frame_annotations") or [],
        }
        return self._item(
            hub_file.path_in_repo, commit, strip_prefix=XD_VIDEO_PREFIX, labels=_jsonable(labels)
        )

    # -- rows with a video column --------------------------------------------------------------

    def _rows_with_video_column(self, commit: str) -> Iterator[VideoItem]:
        datasets = _import_datasets()
        column = self.video_column
        splits = None if self.split == "all" else self.split
        try:
            loaded = datasets.load_dataset(
                self.repo_id, name=self.config, split=splits, revision=commit, streaming=True
            )
        except Exception as e:  # noqa: BLE001
            raise translate_hub_error(e, what=f"Loading {self.repo_id} with datasets", listing=True) from e
        by_split = {self.split: loaded} if splits else dict(loaded)
        for split, rows in by_split.items():
            for row in rows:
                if column not in row:
                    raise ConfigurationError(
                        f"Column {column!r} is not in {self.repo_id} (columns: {', '.join(row)}). "
                        "Give the one holding the video path or URL with --hf-video-column."
                    )
                item = self._row_item(row, column=column, split=split, commit=commit)  # type: ignore[arg-type]
                if item is not None:
                    yield item

    def _row_item(self, row: Mapping[str, Any], *, column: str, split: str, commit: str) -> VideoItem | None:
        value = row[column]
        if isinstance(value, Mapping):  # datasets' Video/Value features may hold {"path": ...}
            value = value.get("path")
        text = str(value or "")
        labels = _jsonable({key: val for key, val in row.items() if key != column})
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
                hub_file = HubFile(self.repo_id, commit, text)
        except UnsafePathError as e:
            self.rejected.append((text, str(e)))
            logger.warning("%s", e)
            return None
        if hub_file.repo_id == self.repo_id:
            hub_file = HubFile(self.repo_id, commit, hub_file.path_in_repo)
        try:
            relative_id = safe_relative_id(hub_file.path_in_repo)
        except UnsafePathError as e:
            self.rejected.append((text, str(e)))
            logger.warning("%s", e)
            return None
        return VideoItem(relative_id=relative_id, path=hub_file.to_location(), labels=labels)


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError as e:
        raise DependencyError("The datasets library is required here: `pip install 'datasets>=2.19'`.") from e
    return datasets


def _parquet_rows(files: list[str]) -> Iterator[Mapping[str, Any]]:
    """Rows of local Parquet files, read through ``datasets`` (streaming: no Arrow cache is written)."""
    datasets = _import_datasets()
    yield from datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)


def _jsonable(value: Any) -> Any:
    """``value`` with everything JSON cannot hold (bytes, arrays, dates) turned into lists or strings."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    tolist = getattr(value, "tolist", None)
    return _jsonable(tolist()) if callable(tolist) else str(value)
