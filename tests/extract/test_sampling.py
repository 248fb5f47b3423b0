"""Which frames each clip takes."""

from __future__ import annotations

import numpy as np
import pytest

from vfx_tasks.errors import ConfigurationError
from vfx_tasks.extract.sampling import batch_slices, sample_clip_indices


def sample(num_frames: int, num_clips: int = -1, strategy: str = "sequential") -> np.ndarray:
    return sample_clip_indices(
        num_frames, clip_len=32, sampling_rate=2, num_clips_per_video=num_clips, clip_sampling=strategy
    )


def test_all_clips_cover_the_video_in_consecutive_64_frame_steps() -> None:
    clips = sample(256)
    assert clips.shape == (4, 32)
    np.testing.assert_array_equal(clips[1], np.arange(64, 128, 2))


def test_last_partial_clip_loops_its_own_segment() -> None:
    # 120 frames: ceil(120 / 64) = 2 clips; the second has 28 real frames (64..118), then loops.
    clips = sample(120)
    assert clips.shape == (2, 32)
    np.testing.assert_array_equal(clips[1], list(range(64, 120, 2)) + [64, 66, 68, 70])


def test_tail_of_one_frame_repeats_that_frame() -> None:
    clips = sample(129)
    assert clips.shape == (3, 32)
    np.testing.assert_array_equal(clips[2], np.full(32, 128))


def test_video_shorter_than_one_clip_loops_from_the_start() -> None:
    clips = sample(10)
    np.testing.assert_array_equal(clips, [[0, 2, 4, 6, 8] * 6 + [0, 2]])


def test_first_n_clips_wrap_modulo_the_frame_count() -> None:
    clips = sample(120, num_clips=3)
    assert clips.shape == (3, 32)
    np.testing.assert_array_equal(clips[1], (np.arange(64, 128, 2)) % 120)
    np.testing.assert_array_equal(clips[2], np.arange(128, 192, 2) % 120)


def test_uniform_clips_spread_over_the_whole_video() -> None:
    clips = sample(1000, num_clips=4, strategy="uniform")
    starts = clips[:, 0]
    assert starts[0] < 250 <= starts[1] < 500 <= starts[2] < 750 <= starts[3]
    assert clips.max() < 1000
    assert np.all(np.diff(clips, axis=1) == 2)


def test_uniform_on_a_short_video_wraps() -> None:
    clips = sample(20, num_clips=2, strategy="uniform")
    assert clips.shape == (2, 32) and clips.max() < 20


@pytest.mark.parametrize("bad", [0, -2])
def test_bad_num_clips_is_rejected(bad: int) -> None:
    with pytest.raises(ConfigurationError, match="-1 for all clips or a number >= 1"):
        sample(100, num_clips=bad)


def test_unknown_sampling_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="sequential, uniform"):
        sample(100, num_clips=2, strategy="random")


def test_batches_cover_all_clips_in_order() -> None:
    assert batch_slices(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert batch_slices(5, -1) == [slice(0, 5)]
    with pytest.raises(ConfigurationError, match="batch_size"):
        batch_slices(5, 0)
