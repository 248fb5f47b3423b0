"""The decoder interface: decord by default, PyAV frame for frame the same."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import I3D
from tests.extract.test_golden import relative_error
from vfx_tasks import FeatureExtractor
from vfx_tasks.errors import ConfigurationError, VideoError
from vfx_tasks.extract.decoders import open_video
from vfx_tasks.extract.video import VideoReader

pytest.importorskip("av")


def write_numbered_video(path: Path, *, num_frames: int, gop: int) -> Path:
    """H.264 whose frame ``i`` is flat grey ``8 * i`` (so any frame says which one it is)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = gop
        for index in range(num_frames):
            rgb = np.full((48, 64, 3), 8 * index, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_decord_is_the_default(sample_videos_dir: Path) -> None:
    with open_video(sample_videos_dir / "carphone_pristine.mp4") as video:
        assert isinstance(video, VideoReader)


def test_unknown_decoder_is_a_configuration_error(sample_videos_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"Invalid decoder \('opencv'\). Supported values"):
        open_video(sample_videos_dir / "carphone_pristine.mp4", decoder="opencv")  # type: ignore[arg-type]


def test_missing_pyav_names_the_install(monkeypatch: pytest.MonkeyPatch, sample_videos_dir: Path) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(ConfigurationError, match=r"pip install 'vfx_tasks\[pyav\]'"):
        open_video(sample_videos_dir / "carphone_pristine.mp4", decoder="pyav")


@pytest.mark.parametrize("indices", [[0, 1, 2], [3, 9, 10, 31], [30, 31], [0, 31], [7]])
def test_pyav_reads_exactly_the_frames_asked_for(tmp_path: Path, indices: list[int]) -> None:
    path = write_numbered_video(tmp_path / "numbered.mp4", num_frames=32, gop=5)
    with open_video(path, decoder="pyav") as video, open_video(path) as reference:
        assert video.info.num_frames == 32
        frames = video.read_frames(np.array(indices))
        again = video.read_frames(np.array(indices[::-1][:1]))  # a seek backwards after reading
        expected = reference.read_frames(np.array(indices))
    levels = frames.reshape(len(indices), -1).mean(axis=1)
    np.testing.assert_allclose(levels, 8 * np.array(indices), atol=2)
    np.testing.assert_array_equal(frames, expected)
    np.testing.assert_array_equal(again[0], frames[-1])


def test_pyav_bad_file_is_a_video_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_bytes(b"these are my notes, not a video\n" * 50)
    with pytest.raises(VideoError, match="Cannot decode"):
        open_video(path, decoder="pyav")


def test_pyav_features_match_decord(pretrained_dir: Path, sample_videos_dir: Path) -> None:
    extractor = FeatureExtractor(I3D, pretrained_dir=pretrained_dir, device="cpu")
    video = sample_videos_dir / "bikes.mp4"
    ours = extractor.extract(video, crop_type="center", num_clips_per_video=2, decoder="pyav").features
    reference = extractor.extract(video, crop_type="center", num_clips_per_video=2).features
    assert relative_error(ours, reference, I3D) <= 0.01
