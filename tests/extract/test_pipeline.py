"""The per-video pipeline and the public API, on real videos."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import I3D, write_test_video
from vfx_tasks import FeatureExtractor, extract_features
from vfx_tasks.errors import ConfigurationError, UnknownModelError, VideoError
from vfx_tasks.extract.clips import decode_clips
from vfx_tasks.extract.sampling import sample_clip_indices
from vfx_tasks.extract.video import VideoReader


@pytest.fixture(scope="module")
def i3d(pretrained_dir: Path) -> FeatureExtractor:
    return FeatureExtractor("i3d", pretrained_dir=pretrained_dir, device="cpu")


def test_first_n_clips_equal_the_first_clips_of_all(
    i3d: FeatureExtractor, sample_videos_dir: Path
) -> None:
    video = sample_videos_dir / "carphone_pristine.mp4"
    everything = i3d.extract(video, crop_type="center", batch_size=1)
    first = i3d.extract(video, crop_type="center", num_clips_per_video=1)
    assert everything.shape == (2, 1, 2048) and first.shape == (1, 1, 2048)
    np.testing.assert_allclose(first.features, everything.features[:1], rtol=0, atol=1e-5)
    assert everything.num_frames == 120


def test_batch_size_does_not_change_features(i3d: FeatureExtractor, sample_videos_dir: Path) -> None:
    video = sample_videos_dir / "carphone_pristine.mp4"
    one_by_one = i3d.extract(video, crop_type="center", batch_size=1).features
    all_at_once = i3d.extract(video, crop_type="center", batch_size=-1).features
    np.testing.assert_allclose(one_by_one, all_at_once, rtol=0, atol=1e-4)


def test_uniform_sampling_reaches_the_end_of_the_video(
    i3d: FeatureExtractor, sample_videos_dir: Path
) -> None:
    video = sample_videos_dir / "bikes.mp4"  # 250 frames: sequential N=2 covers only the first 128
    uniform = i3d.extract(video, crop_type="center", num_clips_per_video=2, clip_sampling="uniform")
    sequential = i3d.extract(video, crop_type="center", num_clips_per_video=2)
    assert uniform.shape == sequential.shape == (2, 1, 2048)
    assert not np.allclose(uniform.features[1], sequential.features[1], atol=1e-3)


def test_video_shorter_than_a_clip_loops(i3d: FeatureExtractor, tmp_path: Path) -> None:
    video = write_test_video(tmp_path / "short.avi", width=320, height=240, num_frames=9, fourcc="MJPG")
    features = i3d.extract(video, crop_type="center").features
    assert features.shape == (1, 1, 2048) and np.isfinite(features).all()


def test_portrait_video_uses_width_as_short_side(i3d: FeatureExtractor, tmp_path: Path) -> None:
    video = write_test_video(tmp_path / "portrait.mp4", width=180, height=320, num_frames=40)
    features = i3d.extract(video, crop_type="5-crop", num_clips_per_video=1).features
    assert features.shape == (1, 5, 2048) and np.isfinite(features).all()


def test_public_function_reads_pretrained_dir_from_environment(
    pretrained_dir: Path, sample_videos_dir: Path, monkeypatch: pytest.MonkeyPatch, i3d: FeatureExtractor
) -> None:
    monkeypatch.setenv("VFX_PRETRAINED_DIR", str(pretrained_dir))
    video = sample_videos_dir / "carphone_pristine.mp4"
    features = extract_features(video, model=I3D, crop_type="center", num_clips_per_video=1, device="cpu")
    np.testing.assert_array_equal(
        features, i3d.extract(video, crop_type="center", num_clips_per_video=1).features
    )


def test_corrupt_video_raises_video_error(i3d: FeatureExtractor, tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00garbage" * 100)
    with pytest.raises(VideoError, match="Cannot decode video"):
        i3d.extract(fake)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crop_type": "3-crop"}, "Invalid crop type"),
        ({"num_clips_per_video": 0}, "num_clips_per_video"),
        ({"batch_size": 0}, "batch_size"),
        ({"clip_sampling": "random"}, "clip sampling"),
    ],
)
def test_bad_arguments_fail_before_decoding(
    i3d: FeatureExtractor, tmp_path: Path, kwargs: dict, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        i3d.extract(tmp_path / "never-opened.mp4", **kwargs)


def test_unknown_model_fails_before_loading_anything(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError, match="Supported values are"):
        FeatureExtractor("resnet18", pretrained_dir=tmp_path)


@pytest.mark.parametrize(
    ("device", "precision", "message"),
    [("tpu", "fp32", "Invalid device"), ("cpu", "fp8", "Invalid precision")]
    + ([] if torch.cuda.is_available() else [("cuda:0", "fp32", "CUDA is not available")]),
)
def test_bad_device_or_precision(tmp_path: Path, device: str, precision: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        FeatureExtractor("i3d", pretrained_dir=tmp_path, device=device, precision=precision)  # type: ignore[arg-type]


@pytest.mark.gpu
def test_gpu_features_match_cpu(pretrained_dir: Path, sample_videos_dir: Path, i3d: FeatureExtractor) -> None:
    video = sample_videos_dir / "carphone_pristine.mp4"
    gpu = FeatureExtractor("i3d", pretrained_dir=pretrained_dir, device="cuda")
    on_gpu = gpu.extract(video, crop_type="5-crop").features
    on_cpu = i3d.extract(video, crop_type="5-crop").features
    rel = np.sqrt(np.mean(np.sum((on_gpu - on_cpu) ** 2, axis=-1))) / 3.6863
    assert rel <= 0.01


def test_frames_are_decoded_in_chunks_and_resized_as_they_come(sample_videos_dir: Path) -> None:
    # Given a 720p video and a batch of two clips: 64 distinct frames, 177 MB at full size.
    video = VideoReader(sample_videos_dir / "bigbuckbunny.mp4")
    clips = sample_clip_indices(
        video.info.num_frames, clip_len=32, sampling_rate=2, num_clips_per_video=2, clip_sampling="sequential"
    )
    frame_bytes = video.info.height * video.info.width * 3
    at_once = decode_clips(video, clips, short_side=256, chunk_bytes=len(np.unique(clips)) * frame_bytes)

    # When they are decoded four full-size frames at a time,
    tracemalloc.start()  # numpy (hence decord's frames) reports its buffers to tracemalloc
    chunked = decode_clips(video, clips, short_side=256, chunk_bytes=4 * frame_bytes)
    _, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    # Then the frames are the same, already at the model's short side, and no more than a few
    # full-size frames were held at once (a 4K batch stays as small as a 360p one).
    assert chunked.frames_nhwc.shape == (64, 256, 455, 3)
    assert torch.equal(chunked.frames_nhwc, at_once.frames_nhwc)
    np.testing.assert_array_equal(chunked.positions_bt, at_once.positions_bt)
    assert peak_bytes < 8 * frame_bytes, f"peak {peak_bytes / frame_bytes:.1f} full-size frames"
