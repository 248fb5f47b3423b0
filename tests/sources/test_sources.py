"""Listing local videos: recursive, common containers, relative ids as the original tool."""

from __future__ import annotations

from pathlib import Path

import pytest

from vfx_tasks.errors import ConfigurationError
from vfx_tasks.sources.base import LocalFolderSource, normalize_relative_id


def test_scan_is_recursive_sorted_and_keeps_relative_dirs(tmp_path: Path) -> None:
    for name in [
        "b.mp4",
        "a.AVI",
        "sub/deep/c.mkv",
        "sub/d.webm",
        "notes.txt",
        ".hidden.mp4",
        ".cache/e.mp4",
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    items = list(LocalFolderSource(tmp_path).iter_videos())
    assert [item.relative_id for item in items] == ["a", "b", "sub/d", "sub/deep/c"]
    assert items[3].path == str(tmp_path.resolve() / "sub" / "deep" / "c.mkv")
    assert items[3].video_id == "c"


def test_same_stem_in_two_containers_is_listed_once(tmp_path: Path) -> None:
    (tmp_path / "v.avi").write_bytes(b"")
    (tmp_path / "v.mp4").write_bytes(b"")
    assert [item.path for item in LocalFolderSource(tmp_path).iter_videos()] == [
        str(tmp_path.resolve() / "v.avi")
    ]


def test_missing_folder_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        LocalFolderSource(tmp_path / "nope")


@pytest.mark.parametrize("line", ["a/b", "./a/b\n", "a\\b", "/a/b/"])
def test_progress_lines_normalize_to_relative_ids(line: str) -> None:
    assert normalize_relative_id(line) == "a/b"


def test_each_folder_is_listed_once_even_through_symlink_cycles(tmp_path: Path) -> None:
    # Given a video and two links back up the tree (a cycle), plus a link to a sibling folder,
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "v.mp4").write_bytes(b"")
    (tmp_path / "a" / "up").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "a" / "self").symlink_to(tmp_path / "a", target_is_directory=True)
    (tmp_path / "b").symlink_to(tmp_path / "a", target_is_directory=True)
    # When the folder is listed, then the video is one task, under the first path found in order.
    assert [item.relative_id for item in LocalFolderSource(tmp_path).iter_videos()] == ["a/v"]
