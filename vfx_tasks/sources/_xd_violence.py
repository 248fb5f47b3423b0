"""What the XD-Violence repository on the Hub looks like, how to list it, and the labels its old
loading script made.

Used by :mod:`vfx_tasks.sources.hub_dataset` only, which fetches with the functions here and turns
what they fetched into items with the pure ones (unsafe names come back as :class:`Rejected`).

Layout of ``jherng/xd-violence``: videos under ``data/video/<range>/<name>.mp4`` (train ranges
``1-1004``, ``1005-2004``... and ``test_videos``), frame-level annotations of the test videos in
``data/test_annotations.txt``. The Hub may also serve a Parquet export of its ``video`` config
whose rows carry the same labels.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any

from vfx_tasks.errors import UnsafePathError, VfxError
from vfx_tasks.extract.video import VIDEO_EXTENSIONS
from vfx_tasks.sources._dataset_rows import hub_video_item, jsonable
from vfx_tasks.sources.base import Rejected, VideoItem
from vfx_tasks.sources.hub import download_file, parquet_export_files
from vfx_tasks.sources.hub_paths import HubFile, parse_resolve_url

logger = logging.getLogger(__name__)

XD_VIOLENCE = "jherng/xd-violence"
XD_CONFIG = "video"
XD_VIDEO_PREFIX = "data/video/"
XD_TEST_RANGE = "test_videos"
XD_TEST_ANNOTATIONS = "data/test_annotations.txt"
#: Label codes in XD-Violence file names (``..._label_B2-G-0``) and their class indices.
XD_CODE_TO_INDEX: Mapping[str, int] = {"A": 0, "B1": 1, "B2": 2, "B4": 3, "B5": 4, "B6": 5, "G": 6}
_ANNOTATION_LINE = re.compile(r"^(?P<name>.+?)(?P<frames>(?:\s+\d+)*)$")


def xd_violence_labels(video_id: str) -> dict[str, Any]:
    """``binary_target`` and ``multilabel_targets`` from an XD-Violence file stem (``..._label_B1-B2-0``)."""
    codes = video_id.rsplit("_", 1)[-1].split("-")
    return {
        "binary_target": int(len(codes) > 1),
        "multilabel_targets": [XD_CODE_TO_INDEX[code] for code in codes if code in XD_CODE_TO_INDEX],
        "label_codes": [code for code in codes if code != "0"],
    }


def parse_frame_annotations(text: str) -> dict[str, list[dict[str, int]]]:
    """``{video_id: [{"start", "end"}, ...]}`` from lines ``<name>[.mp4] start end [start end ...]``.

    The frame numbers are read from the end of the line, so names holding spaces survive.
    """
    found: dict[str, list[dict[str, int]]] = {}
    for line in text.splitlines():
        match = _ANNOTATION_LINE.match(line.strip())
        if match is None:
            continue
        name = match["name"].strip()
        name = name[:-4] if name.endswith(".mp4") else name
        numbers = [int(number) for number in match["frames"].split()]
        if len(numbers) % 2:
            logger.warning("Ignoring annotation line %r: frame numbers come in start/end pairs", line)
            continue
        found[name] = [{"start": s, "end": e} for s, e in zip(numbers[::2], numbers[1::2], strict=True)]
    return found


def xd_violence_from_files(
    paths: Iterable[str],
    *,
    repo_id: str,
    commit: str,
    split: str,
    pattern: str | None,
    annotations: Mapping[str, list[dict[str, int]]],
) -> Iterator[VideoItem | Rejected]:
    """The video files of ``paths`` under ``data/video/<range>/`` in ``split`` (or ``"all"``), labelled
    from their names and the test ``annotations``."""
    for path in paths:
        relative = path[len(XD_VIDEO_PREFIX) :] if path.startswith(XD_VIDEO_PREFIX) else ""
        if "/" not in relative or PurePosixPath(path).suffix.lower() not in VIDEO_EXTENSIONS:
            continue
        if pattern is not None and not fnmatch.fnmatchcase(path, pattern):
            continue
        video_range = relative.split("/", 1)[0]
        video_split = "test" if video_range == XD_TEST_RANGE else "train"
        if split not in ("all", video_split):
            continue
        video_id = PurePosixPath(path).stem
        labels = {
            "id": video_id,
            "split": video_split,
            **xd_violence_labels(video_id),
            "frame_annotations": annotations.get(video_id, []),
        }
        yield hub_video_item(repo_id, commit, path, strip_prefix=XD_VIDEO_PREFIX, labels=labels)


def read_test_annotations(
    repo_id: str, commit: str, *, endpoint: str | None, cache_dir: str | os.PathLike[str] | None
) -> dict[str, list[dict[str, int]]]:
    """The frame annotations of the test videos, or none (logged) if the file cannot be fetched."""
    hub_file = HubFile(repo_id, commit, XD_TEST_ANNOTATIONS)
    try:
        path = download_file(hub_file, cache_dir=cache_dir, endpoint=endpoint)
    except VfxError as e:  # labels are a bonus: a missing file must not stop the run
        logger.warning("No frame annotations for the test videos (%s: %s)", type(e).__name__, e)
        return {}
    with open(path, encoding="utf-8") as f:
        return parse_frame_annotations(f.read())


def xd_violence_export_files(
    repo_id: str,
    *,
    config: str | None,
    split: str,
    endpoint: str | None,
    cache_dir: str | os.PathLike[str] | None,
) -> dict[str, list[str]] | None:
    """Local copies of the Hub's Parquet export of ``config`` (``video`` by default), by split in
    ``split`` (or ``"all"``), or ``None`` if the Hub serves no full export."""
    config = config or XD_CONFIG
    export = parquet_export_files(repo_id, config=config, endpoint=endpoint)
    if export is None:
        logger.info("%s has no Parquet export of %r; listing its video files", repo_id, config)
        return None
    export_commit, paths = export
    by_split: dict[str, list[str]] = {}
    for path in paths:
        parts = path.split("/")
        if len(parts) == 3 and parts[2].endswith(".parquet"):
            by_split.setdefault(parts[1], []).append(path)
    if not by_split:
        return None
    if any(name.startswith("partial-") for name in by_split):
        # A partial export holds only the first rows of a split: listing the files misses nothing.
        logger.info("The Parquet export of %s is partial; listing its video files instead", repo_id)
        return None
    return {
        name: [
            download_file(
                HubFile(repo_id, export_commit, path), cache_dir=cache_dir, endpoint=endpoint, listing=True
            )
            for path in sorted(by_split[name])
        ]
        for name in sorted(by_split)
        if split in ("all", name)
    }


def xd_violence_from_export_rows(
    rows: Iterable[Mapping[str, Any]], *, repo_id: str, commit: str, split: str
) -> Iterator[VideoItem | Rejected]:
    """The videos of the Parquet export's ``rows`` of ``split``, located in ``repo_id`` at ``commit``."""
    for row in rows:
        item = _export_row_item(row, repo_id=repo_id, commit=commit, split=split)
        if item is not None:
            yield item


def _export_row_item(
    row: Mapping[str, Any], *, repo_id: str, commit: str, split: str
) -> VideoItem | Rejected | None:
    url = str(row.get("path") or "")
    try:
        hub_file = parse_resolve_url(url)
    except UnsafePathError as e:
        return Rejected(url, str(e))
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
    return hub_video_item(
        repo_id, commit, hub_file.path_in_repo, strip_prefix=XD_VIDEO_PREFIX, labels=jsonable(labels)
    )
