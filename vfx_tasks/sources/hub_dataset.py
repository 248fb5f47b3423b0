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
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath
from typing import Literal

from vfx_tasks.errors import ConfigurationError
from vfx_tasks.extract.video import VIDEO_EXTENSIONS
from vfx_tasks.sources._dataset_rows import hub_video_item, parquet_rows, rows_with_video_column
from vfx_tasks.sources._xd_violence import (
    XD_VIDEO_PREFIX,
    XD_VIOLENCE,
    parse_frame_annotations,
    read_test_annotations,
    xd_violence_export_files,
    xd_violence_from_export_rows,
    xd_violence_from_files,
    xd_violence_labels,
)
from vfx_tasks.sources.base import Rejected, VideoItem
from vfx_tasks.sources.hub import check_repo_id, dataset_commit, list_dataset_files
from vfx_tasks.sources.hub_paths import check_owner_and_name

logger = logging.getLogger(__name__)

Split = Literal["train", "test", "all"]
SPLITS: tuple[str, ...] = ("train", "test", "all")
__all__ = ["SPLITS", "HubDatasetSource", "parse_frame_annotations", "xd_violence_labels"]


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
        self.repo_id = check_owner_and_name(check_repo_id(repo_id))
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

    def resolve_commit(self) -> str:
        """The commit ``revision`` names now (asked once; every location is pinned to it)."""
        if self._commit is None:
            self._commit = dataset_commit(self.repo_id, revision=self.revision, endpoint=self.endpoint)
        return self._commit

    def iter_videos(self) -> Iterator[VideoItem]:
        commit = self.resolve_commit()
        found: Iterable[VideoItem | Rejected]
        if self.video_column is not None:
            self.listed_with = "datasets"
            found = rows_with_video_column(
                self.repo_id, commit, column=self.video_column, split=self.split, config=self.config
            )
        elif self.is_xd_violence:
            found = self._xd_violence_items(commit)
        else:
            self.listed_with = "file-listing"
            found = self._repository_files(commit)
        seen: set[str] = set()
        for item in sorted(self._keep_safe(found), key=lambda item: item.relative_id):
            if item.relative_id in seen:
                logger.warning(
                    "Skipping %s: another video already has the id %r", item.path, item.relative_id
                )
                continue
            seen.add(item.relative_id)
            yield item

    def _keep_safe(self, found: Iterable[VideoItem | Rejected]) -> list[VideoItem]:
        """The items of ``found``; its rejections are logged and kept in :attr:`rejected`."""
        items = []
        for entry in found:
            if isinstance(entry, Rejected):
                logger.warning("%s", entry.reason)
                self.rejected.append(entry)
            else:
                items.append(entry)
        return items

    def _repository_files(self, commit: str) -> Iterator[VideoItem | Rejected]:
        for path in list_dataset_files(self.repo_id, revision=commit, endpoint=self.endpoint):
            if self.pattern is not None:
                if not fnmatch.fnmatchcase(path, self.pattern):
                    continue
            elif PurePosixPath(path).suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            if self.split != "all" and self.split not in path.split("/")[:-1]:
                continue
            yield hub_video_item(self.repo_id, commit, path)

    def _xd_violence_items(self, commit: str) -> Iterable[VideoItem | Rejected]:
        if self.use_parquet_export:
            export = xd_violence_export_files(
                self.repo_id,
                config=self.config,
                split=self.split,
                endpoint=self.endpoint,
                cache_dir=self.cache_dir,
            )
            if export is not None:
                self.listed_with = "parquet-export"
                return (
                    found
                    for split, files in export.items()
                    for found in xd_violence_from_export_rows(
                        parquet_rows(files), repo_id=self.repo_id, commit=commit, split=split
                    )
                )
        self.listed_with = "file-listing"
        annotations: dict[str, list[dict[str, int]]] = {}
        if self.split in ("test", "all"):
            annotations = read_test_annotations(
                self.repo_id, commit, endpoint=self.endpoint, cache_dir=self.cache_dir
            )
        folder = XD_VIDEO_PREFIX.rstrip("/")
        paths = list_dataset_files(self.repo_id, revision=commit, folder=folder, endpoint=self.endpoint)
        return xd_violence_from_files(
            paths,
            repo_id=self.repo_id,
            commit=commit,
            split=self.split,
            pattern=self.pattern,
            annotations=annotations,
        )
