"""Opening and decoding videos, and the errors bad files give."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_test_video
from vfx_tasks.errors import PermanentError, VideoError
from vfx_tasks.extract.video import VideoReader


def test_reads_info_and_requested_frames(sample_videos_dir: Path) -> None:
    with VideoReader(sample_videos_dir / "carphone_pristine.mp4") as video:
        assert (video.info.num_frames, video.info.height, video.info.width) == (120, 144, 176)
        frames = video.read_frames(np.array([0, 2, 119]))
    assert frames.shape == (3, 144, 176, 3) and frames.dtype == np.uint8


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: tmp / "missing.mp4", "does not exist"),
        (lambda tmp: tmp, "not a regular file"),
        (lambda tmp: _write(tmp / "empty.mp4", b""), r"empty \(0 bytes\)"),
        (lambda tmp: _write(tmp / "notes.mp4", b"these are my notes, not a video\n" * 50), "Cannot decode"),
    ],
    ids=["missing", "directory", "zero-byte", "text-named-mp4"],
)
def test_bad_files_raise_video_error(tmp_path: Path, make, expected: str) -> None:
    with pytest.raises(VideoError, match=expected) as info:
        VideoReader(make(tmp_path))
    assert isinstance(info.value, PermanentError)


def test_truncated_video_raises_video_error(tmp_path: Path, sample_videos_dir: Path) -> None:
    data = (sample_videos_dir / "bikes.mp4").read_bytes()
    truncated = _write(tmp_path / "truncated.mp4", data[: len(data) // 3])
    # Depending on where the cut falls, the container or a later frame fails: either way a VideoError.
    with pytest.raises(VideoError, match="truncated|corrupt|damaged"):
        with VideoReader(truncated) as video:
            video.read_frames(np.arange(0, video.info.num_frames, 2))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_raises_video_error(tmp_path: Path, sample_videos_dir: Path) -> None:
    path = _write(tmp_path / "secret.mp4", (sample_videos_dir / "carphone_pristine.mp4").read_bytes())
    path.chmod(0)
    with pytest.raises(VideoError, match="not readable"):
        VideoReader(path)


def test_portrait_video_reports_its_shape(tmp_path: Path) -> None:
    path = write_test_video(tmp_path / "portrait.mp4", width=144, height=256, num_frames=10)
    with VideoReader(path) as video:
        assert (video.info.height, video.info.width, video.info.num_frames) == (256, 144, 10)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
