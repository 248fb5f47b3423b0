"""Listing helpers of Hub datasets are pure: given rows or file names, they yield items, and the
unsafe names as :class:`Rejected`, without a source to fill in. No Hub is needed for that."""

from __future__ import annotations

from tests.hub_replica import XD_REPO, XD_UNSAFE, XD_VIDEOS, xd_relative_id
from vfx_tasks.sources._dataset_rows import items_from_rows
from vfx_tasks.sources._xd_violence import xd_violence_from_export_rows, xd_violence_from_files
from vfx_tasks.sources.base import Rejected, VideoItem

COMMIT = "c" * 40
AMELIE = XD_VIDEOS[2][0]


def test_rows_with_a_video_column_yield_items_and_rejections() -> None:
    # Given rows naming a video by path, by a foreign URL, and by a path leaving the folder,
    rows = [
        {"video": "videos/a #1.mp4", "label": 3},
        {"video": "https://example.org/b.mp4", "label": 4},
        {"video": {"path": "../../etc/passwd.mp4"}, "label": 5},
    ]
    # when they are read twice,
    found = list(items_from_rows(rows, repo_id="someone/table", commit=COMMIT, column="video", split="train"))
    again = list(items_from_rows(rows, repo_id="someone/table", commit=COMMIT, column="video", split="train"))
    # then the safe one is an item pinned to the commit, the foreign URL is skipped, the unsafe one
    # comes back as a rejection with its reason, and nothing was kept between the two reads.
    assert found == again
    item, rejected = found
    assert item == VideoItem("videos/a #1", f"hf://datasets/someone/table@{COMMIT}/videos/a #1.mp4")
    assert item.labels == {"label": 3, "split": "train"}
    assert isinstance(rejected, Rejected) and rejected.path == "../../etc/passwd.mp4"
    assert "Refusing remote path" in rejected.reason


def test_xd_violence_file_names_yield_items_and_rejections() -> None:
    # Given a listing with videos of both splits, unsafe names and files that are no videos,
    paths = sorted([*(p for p, _ in XD_VIDEOS), *XD_UNSAFE, "data/video/notes.txt", "data/video/x.mp4"])
    annotations = {xd_relative_id(AMELIE).split("/")[-1]: [{"start": 10, "end": 52}]}

    # when it is turned into items,
    found = list(
        xd_violence_from_files(
            paths, repo_id=XD_REPO, commit=COMMIT, split="all", pattern=None, annotations=annotations
        )
    )

    # then the videos are items with labels, and the unsafe names come back as rejections.
    items = [entry for entry in found if isinstance(entry, VideoItem)]
    assert sorted(item.relative_id for item in items) == sorted(xd_relative_id(p) for p, _ in XD_VIDEOS)
    assert sorted(entry.path for entry in found if isinstance(entry, Rejected)) == sorted(XD_UNSAFE)
    amelie = next(item for item in items if item.relative_id == xd_relative_id(AMELIE))
    assert amelie.labels is not None and amelie.labels["frame_annotations"] == [{"start": 10, "end": 52}]
    test_only = xd_violence_from_files(
        paths, repo_id=XD_REPO, commit=COMMIT, split="test", pattern=None, annotations={}
    )
    assert [entry.path for entry in test_only] == [f"hf://datasets/{XD_REPO}@{COMMIT}/{AMELIE}"]


def test_xd_violence_export_rows_yield_items_and_rejections() -> None:
    url = "https://huggingface.co/datasets/jherng/xd-violence/resolve/main/"
    rows = [
        {"id": "a", "path": url + "data/video/1-1004/a_label_A.mp4", "binary_target": 0},
        {"id": "evil", "path": url + "data/video/..%2F..%2Fetc/evil_label_A.mp4"},
        {"id": "list", "path": url + "data/train_list.txt"},
    ]

    found = list(xd_violence_from_export_rows(rows, repo_id=XD_REPO, commit=COMMIT, split="train"))

    item, rejected = found
    assert item == VideoItem("1-1004/a_label_A", f"hf://datasets/{XD_REPO}@{COMMIT}/data/video/1-1004/a_label_A.mp4")
    assert rejected == Rejected(rows[1]["path"], rejected.reason) and "Refusing" in rejected.reason
