"""Out of memory in a forward splits the batch in halves, down to one clip, with the same features.

On the CPU a stand-in backbone runs out of memory above a number of clip-crops, as a device
would; on CUDA (``gpu`` tests) the real allocator does, under a memory cap
(``torch.cuda.set_per_process_memory_fraction``) that leaves room for one clip only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import I3D, write_test_video
from tests.extract.test_golden import relative_error
from vfx_tasks.errors import DeviceOutOfMemoryError, TransientError
from vfx_tasks.extract.batching import BatchingLoop
from vfx_tasks.extract.pipeline import FeatureExtractor


class BoundedBackbone(nn.Module):
    """Average pooling to the backbone's output shape that runs out of memory, as a device would,
    when given more than ``capacity`` clip-crops; records the batch sizes it was given."""

    def __init__(self, feature_dim: int, capacity: int) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.capacity = capacity
        self.batches: list[int] = []

    def forward(self, clips_ncthw: torch.Tensor) -> torch.Tensor:
        self.batches.append(clips_ncthw.shape[0])
        if clips_ncthw.shape[0] > self.capacity:
            raise torch.OutOfMemoryError(f"{clips_ncthw.shape[0]} clip-crops do not fit in {self.capacity}")
        pooled = clips_ncthw.mean(dim=(3, 4), keepdim=True)  # (N, 3, T, 1, 1): distinct per clip and crop
        scale = torch.arange(1, self.feature_dim + 1, dtype=pooled.dtype).view(1, -1, 1, 1, 1)
        return pooled.repeat(1, -(-self.feature_dim // 3), 1, 1, 1)[:, : self.feature_dim] * scale


@pytest.fixture(scope="module")
def three_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A video of 150 frames: three clips of 64 frames (the last one loops)."""
    return write_test_video(tmp_path_factory.mktemp("oom") / "three.mp4", width=96, height=64, num_frames=150)


def bounded(pretrained_dir: Path, capacity: int) -> FeatureExtractor:
    extractor = FeatureExtractor("i3d", pretrained_dir=pretrained_dir, device="cpu")
    extractor.backbone = BoundedBackbone(extractor.spec.feature_dim, capacity)
    return extractor


def test_per_video_batch_is_halved_until_it_fits(
    pretrained_dir: Path, three_clips: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a device with room for one clip of five crops
    extractor = bounded(pretrained_dir, capacity=5)
    # When a batch of three clips is extracted
    with caplog.at_level(logging.WARNING, logger="vfx_tasks.extract.pipeline"):
        split = extractor.extract(three_clips, crop_type="5-crop", batch_size=3).features
    # Then it ran as 1 + (1 + 1) after the two failures, and the features are those of one clip at a time
    assert extractor.backbone.batches == [15, 5, 10, 5, 5]
    assert "Out of memory on 3 clips; retrying as 1 + 2" in caplog.text
    one_by_one = bounded(pretrained_dir, capacity=5).extract(three_clips, crop_type="5-crop", batch_size=1)
    np.testing.assert_array_equal(split, one_by_one.features)


def test_one_clip_that_does_not_fit_is_a_transient_error(pretrained_dir: Path, three_clips: Path) -> None:
    extractor = bounded(pretrained_dir, capacity=4)
    with pytest.raises(DeviceOutOfMemoryError, match="One clip of .* does not fit in cpu memory") as raised:
        extractor.extract(three_clips, crop_type="5-crop", batch_size=3)
    assert isinstance(raised.value, TransientError)  # the queue retries it later


def test_batched_loop_halves_a_batch_of_clip_crops_until_it_fits(
    pretrained_dir: Path, three_clips: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a loop of 15 clip-crops per forward on a device with room for 4
    extractor = bounded(pretrained_dir, capacity=4)
    loop = BatchingLoop(extractor, batch_clip_crops=15, decoders=1, stall_seconds=60)
    # When a video of three 5-crop clips goes through it
    with caplog.at_level(logging.WARNING, logger="vfx_tasks.extract.batching"):
        result = loop.extract(three_clips, crop_type="5-crop")
    loop.close()
    # Then 15 became 7 + 8, then 3 + 4 and 4 + 4, and every clip-crop has its own features
    assert extractor.backbone.batches == [15, 7, 3, 4, 8, 4, 4]
    assert "Out of memory on 15 clip-crops; retrying as two halves" in caplog.text
    one_by_one = bounded(pretrained_dir, capacity=5).extract(three_clips, crop_type="5-crop", batch_size=1)
    np.testing.assert_array_equal(result.features, one_by_one.features)


def test_batched_loop_reports_one_clip_crop_too_large_to_its_video(
    pretrained_dir: Path, three_clips: Path
) -> None:
    extractor = bounded(pretrained_dir, capacity=0)
    loop = BatchingLoop(extractor, batch_clip_crops=5, decoders=1, stall_seconds=60)
    with pytest.raises(DeviceOutOfMemoryError, match="One clip-crop of .* does not fit in cpu memory"):
        loop.extract(three_clips, crop_type="5-crop")
    loop.close()


# -- on a real GPU ----------------------------------------------------------------------------


@contextlib.contextmanager
def gpu_memory_cap(cap_bytes: int) -> Iterator[None]:
    """This process may hold at most ``cap_bytes`` of the GPU (allocated and cached) in the block."""
    device = torch.device("cuda", 0)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_bytes / total), device)
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()


@pytest.fixture(scope="module")
def four_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 frames: four clips, one piece of the batched loop (``CLIPS_PER_PIECE``)."""
    return write_test_video(tmp_path_factory.mktemp("oom-gpu") / "four.mp4", width=320, height=256,
                            num_frames=256)


def cap_from_one_clip_run(run: Callable[[], np.ndarray]) -> tuple[int, np.ndarray]:
    """``run`` (forwards of one clip) uncapped, which also lets cuDNN pick its kernels for that
    shape; then a cap of 1.3 times its peak: room for one clip at a time, not for two."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    features = run()
    return int(1.3 * torch.cuda.max_memory_allocated()), features


@pytest.mark.gpu
def test_per_video_batch_too_large_for_the_gpu_is_split(
    pretrained_dir: Path, four_clips: Path, caplog: pytest.LogCaptureFixture
) -> None:
    extractor = FeatureExtractor("i3d", pretrained_dir=pretrained_dir, device="cuda")
    cap, one_by_one = cap_from_one_clip_run(
        lambda: extractor.extract(four_clips, crop_type="5-crop", batch_size=1).features)
    with gpu_memory_cap(cap), caplog.at_level(logging.WARNING, logger="vfx_tasks.extract.pipeline"):
        split = extractor.extract(four_clips, crop_type="5-crop", batch_size=4).features
    assert "Out of memory on 4 clips; retrying as 2 + 2" in caplog.text
    # Each clip's own features (this video's clips differ by rel 0.86 from one another, so a
    # misplaced clip shows); the golden bar, as halves may run other kernels than one clip.
    assert split.shape == one_by_one.shape == (4, 5, 2048)
    assert relative_error(split, one_by_one, I3D) <= 0.01


@pytest.mark.gpu
def test_batched_loop_batch_too_large_for_the_gpu_is_split(
    pretrained_dir: Path, four_clips: Path, caplog: pytest.LogCaptureFixture
) -> None:
    extractor = FeatureExtractor("i3d", pretrained_dir=pretrained_dir, device="cuda")

    def through_loop(batch_clip_crops: int) -> np.ndarray:
        loop = BatchingLoop(extractor, batch_clip_crops=batch_clip_crops, decoders=1, stall_seconds=60)
        try:
            return loop.extract(four_clips, crop_type="5-crop").features
        finally:
            loop.close()

    cap, one_by_one = cap_from_one_clip_run(lambda: through_loop(5))
    with gpu_memory_cap(cap), caplog.at_level(logging.WARNING, logger="vfx_tasks.extract.batching"):
        split = through_loop(20)
    assert "Out of memory on 20 clip-crops; retrying as two halves" in caplog.text
    assert split.shape == one_by_one.shape == (4, 5, 2048)
    assert relative_error(split, one_by_one, I3D) <= 0.01
