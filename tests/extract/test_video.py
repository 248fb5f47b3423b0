"""Opening and decoding videos, and the errors bad files give."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PROCESS_TIMEOUT_SECONDS, REPO_DIR, write_test_video
from tests.helpers import write_huge_video
from vfx_tasks.errors import PermanentError, VideoError, VideoTooLargeError
from vfx_tasks.extract.video import VideoReader
from vfx_tasks.settings import DEFAULT_MAX_PIXELS


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


#: Run under an RLIMIT_DATA far below one decoded frame: a refusal that comes before decoding
#: still works there; a decoder that had started on the frame would fail for memory instead.
_OPEN_UNDER_A_MEMORY_LIMIT = """
import resource, sys
from vfx_tasks.extract.decoders import open_video
limit = 400 * 2**20
resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.RLIM_INFINITY))
try:
    with open_video(sys.argv[1], decoder=sys.argv[2], max_pixels=int(sys.argv[3])) as video:
        video.read_frames(__import__("numpy").array([0]))
    print("decoded")
except Exception as e:
    print(type(e).__name__, e)
"""


@pytest.fixture(scope="module")
def huge_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_huge_video(tmp_path_factory.mktemp("huge") / "huge.mp4")


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_frames_larger_than_max_pixels_are_refused_before_any_is_decoded(
    huge_video: Path, decoder: str
) -> None:
    # Given a 750 KB video whose 16000 x 16000 frames take 768 MB each once decoded,
    assert huge_video.stat().st_size < 2 << 20
    run = functools.partial(
        subprocess.run, capture_output=True, text=True, cwd=REPO_DIR, timeout=PROCESS_TIMEOUT_SECONDS,
        check=True,
    )
    script = [sys.executable, "-c", _OPEN_UNDER_A_MEMORY_LIMIT, str(huge_video), decoder]
    # when it is opened within the default limit (8K) by a process that has 400 MB for its data,
    refused = run([*script, str(DEFAULT_MAX_PIXELS)]).stdout
    # then it is refused from the container's headers, as a permanent failure naming the setting,
    assert refused.startswith("VideoTooLargeError Video "), refused
    assert "16000 x 16000 = 256,000,000 pixels" in refused and "VFX_MAX_PIXELS" in refused
    assert issubclass(VideoTooLargeError, PermanentError) and VideoTooLargeError.code == "video_too_large"
    # while without the limit the same process runs out of memory decoding it.
    unlimited = run([*script, "0"]).stdout
    assert not unlimited.startswith(("decoded", "VideoTooLargeError")), unlimited
