"""mmaction2's test-time samplers and resize, reproduced frame for frame and pixel for pixel.

Each case runs mmaction2's own transform (``SampleFrames``, ``UniformSample``, ``Resize``,
``CenterCrop``) next to vfx_tasks' version over many video lengths, clip counts and frame sizes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vfx_tasks.extract.crops import crop_boxes
from vfx_tasks.extract.sampling import clip_frame_indices, sample_frames_test_indices, segment_indices
from vfx_tasks.extract.transforms import resize_short_side_mmcv
from vfx_tasks.models import get_model_spec
from vfx_tasks.models._mmaction_compat import import_mmaction_backbones

LENGTHS = (1, 7, 16, 63, 64, 65, 120, 250, 1001)


@pytest.fixture(scope="module")
def transforms():
    import_mmaction_backbones()  # patches the wheel before mmaction2's own imports
    from mmaction.datasets import transforms

    return transforms


def mmaction_frames(transform, num_frames: int, fps: float | None = None) -> np.ndarray:
    results = transform.transform({"total_frames": num_frames, "start_index": 0, "avg_fps": fps})
    return results["frame_inds"].reshape(-1, transform.clip_len)


@pytest.mark.parametrize("num_frames", LENGTHS)
@pytest.mark.parametrize("num_clips", [1, 2, 3, 10])
@pytest.mark.parametrize(("clip_len", "interval"), [(16, 4), (32, 2), (8, 8)])
def test_sample_frames_test_mode(
    transforms, num_frames: int, num_clips: int, clip_len: int, interval: int
) -> None:
    reference = transforms.SampleFrames(clip_len=clip_len, frame_interval=interval, num_clips=num_clips,
                                        test_mode=True)
    ours = sample_frames_test_indices(
        num_frames, clip_len=clip_len, frame_interval=interval, num_clips=num_clips
    )
    np.testing.assert_array_equal(ours, mmaction_frames(reference, num_frames))


@pytest.mark.parametrize("num_frames", LENGTHS)
@pytest.mark.parametrize("num_clips", [1, 2, 10])
@pytest.mark.parametrize("fps", [None, 24.0, 25.0, 29.97002997002997, 30.0, 60.0])
def test_sample_frames_with_target_fps(
    transforms, num_frames: int, num_clips: int, fps: float | None
) -> None:
    reference = transforms.SampleFrames(clip_len=13, frame_interval=6, num_clips=num_clips, target_fps=30,
                                        test_mode=True)
    ours = sample_frames_test_indices(num_frames, clip_len=13, frame_interval=6, num_clips=num_clips,
                                      target_fps=30.0, fps=fps)
    np.testing.assert_array_equal(ours, mmaction_frames(reference, num_frames, fps))


@pytest.mark.parametrize("num_frames", LENGTHS)
@pytest.mark.parametrize("segments", [3, 8, 25])
def test_segments_of_the_whole_video(transforms, num_frames: int, segments: int) -> None:
    reference = transforms.SampleFrames(clip_len=1, frame_interval=1, num_clips=segments, test_mode=True)
    expected = mmaction_frames(reference, num_frames).reshape(1, segments)
    np.testing.assert_array_equal(segment_indices(num_frames, segments=segments), expected)


@pytest.mark.parametrize("num_frames", LENGTHS)
@pytest.mark.parametrize("segments", [8, 16, 32])
def test_uniform_sample_of_the_whole_video(transforms, num_frames: int, segments: int) -> None:
    reference = transforms.UniformSample(clip_len=segments, num_clips=1, test_mode=True)
    ours = segment_indices(num_frames, segments=segments, rule="uniform_sample")
    np.testing.assert_array_equal(ours, mmaction_frames(reference, num_frames))


def test_segment_windows_split_the_video_into_equal_parts() -> None:
    spec = get_model_spec("tsm")
    clips = clip_frame_indices(spec, 300, num_clips_per_video=3)
    assert clips.shape == (3, 8)
    for window, clip in enumerate(clips):
        assert (window * 100 <= clip).all() and (clip < (window + 1) * 100).all()
        np.testing.assert_array_equal(clip - window * 100, segment_indices(100, segments=8)[0])
    whole = clip_frame_indices(spec, 300)
    np.testing.assert_array_equal(whole, clip_frame_indices(spec, 300, num_clips_per_video=1))
    assert spec.clip_span_frames == 0  # a clip covers a share of the video, not a fixed span


def test_sequential_clips_of_a_zoo_model_step_by_their_span() -> None:
    spec = get_model_spec("slowonly")  # 8 frames, every 8th
    clips = clip_frame_indices(spec, 200)
    assert clips.shape == (4, 8) and spec.clip_span_frames == 64
    np.testing.assert_array_equal(clips[1], np.arange(64, 128, 8))
    retimed = clip_frame_indices(get_model_spec("x3d-s"), 300, fps=60.0)  # 13 x 6 frames at 30 fps
    assert retimed.shape == (2, 13) and retimed[1, 0] == 156  # 13 * 6 * 60 / 30
    np.testing.assert_array_equal(np.diff(retimed[0]), np.diff(np.linspace(0, 155, 13).astype(int)))
    unchanged = dataclasses.replace(spec, sampler="video_features")
    np.testing.assert_array_equal(clip_frame_indices(unchanged, 200), clips)


@pytest.mark.parametrize(("height", "width"), [(144, 176), (272, 640), (720, 1280), (101, 99), (255, 257)])
@pytest.mark.parametrize("short_side", [128, 182, 224, 256])
def test_resize_and_centre_crop_match_mmaction2(transforms, height: int, width: int, short_side: int) -> None:
    rng = np.random.default_rng(height * width + short_side)
    frames = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    resize = transforms.Resize(scale=(-1, short_side))
    resized = resize.transform({"imgs": list(frames), "img_shape": (height, width)})
    ours = resize_short_side_mmcv(frames, short_side)
    np.testing.assert_array_equal(ours, np.stack(resized["imgs"]))
    crop = min(short_side, 224) - 1
    cropped = transforms.CenterCrop(crop_size=crop).transform(dict(resized))
    top, left = crop_boxes(*ours.shape[1:3], crop, "center", centre_rounding="floor")[0]
    np.testing.assert_array_equal(ours[:, top : top + crop, left : left + crop], np.stack(cropped["imgs"]))
