"""The inference loop: clip-crops of many videos in full batches, each video's features intact."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import write_test_video
from vfx_tasks.errors import TaskTimeoutError, VideoError
from vfx_tasks.extract.batching import CPU_CLIPS_PER_FORWARD, BatchingLoop, loop_shape
from vfx_tasks.extract.pipeline import FeatureExtractor

#: Frames of the test videos: 1, 2, 3, 4 and 5 clips of 64 frames (the last one padded).
LENGTHS = (20, 100, 150, 250, 300)


class PoolingBackbone(nn.Module):
    """A cheap stand-in backbone: average pooling to the real output's shape; records its batches."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.batches: list[int] = []

    def forward(self, clips_ncthw: torch.Tensor) -> torch.Tensor:
        self.batches.append(clips_ncthw.shape[0])
        pooled = clips_ncthw.mean(dim=(3, 4), keepdim=True)[:, :, :1]  # (N, 3, 1, 1, 1)
        # Distinct numbers per feature: each channel's mean over frames, scaled by its index.
        scale = torch.arange(1, self.feature_dim + 1, dtype=pooled.dtype).view(1, -1, 1, 1, 1)
        return pooled.repeat(1, -(-self.feature_dim // 3), 1, 1, 1)[:, : self.feature_dim] * scale


@pytest.fixture(scope="module")
def pooling(pretrained_dir: Path) -> FeatureExtractor:
    extractor = FeatureExtractor("i3d", pretrained_dir=pretrained_dir, device="cpu")
    extractor.backbone = PoolingBackbone(extractor.spec.feature_dim)
    return extractor


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("lengths")
    return [
        write_test_video(folder / f"v{frames}.mp4", width=80 + 16 * i, height=64, num_frames=frames)
        for i, frames in enumerate(LENGTHS)
    ]


@contextmanager
def held_backbone(extractor: FeatureExtractor) -> Iterator[threading.Event]:
    """Every forward waits for the event yielded (set on the way out, whatever happens)."""
    gate = threading.Event()
    backbone = extractor.backbone
    original = backbone.forward

    def held(clips: torch.Tensor) -> torch.Tensor:
        gate.wait(60)
        return original(clips)

    backbone.forward = held  # type: ignore[method-assign]
    try:
        yield gate
    finally:
        gate.set()
        del backbone.forward


def _extract_all(loop: BatchingLoop, paths: list[Path], **options: object) -> list[object]:
    """Every path through the loop at once, one thread each; a result or the error raised."""

    def one(path: Path) -> object:
        try:
            return loop.extract(path, crop_type="5-crop", **options)  # type: ignore[arg-type]
        except Exception as e:
            return e

    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(one, paths))


def test_batches_span_videos_and_fill_up(pooling: FeatureExtractor, videos: list[Path]) -> None:
    backbone = pooling.backbone
    assert isinstance(backbone, PoolingBackbone)
    # Given five videos of 1 to 5 clips (75 clip-crops in 5-crop) in flight, two decoding at once,
    loop = BatchingLoop(pooling, batch_clip_crops=20, decoders=2, stall_seconds=60)
    backbone.batches.clear()
    results = _extract_all(loop, videos)
    loop.close()
    # each video's features equal its own extraction (batches never spanning videos),
    for path, result in zip(videos, results, strict=True):
        expected = pooling.extract(path, crop_type="5-crop", batch_size=1).features
        np.testing.assert_array_equal(result.features, expected)  # type: ignore[union-attr]
    # and every forward of the loop but the last is full: 75 clip-crops in four forwards of 20.
    assert backbone.batches[:4] == [20, 20, 20, 15], backbone.batches
    assert loop.stats.forwards == 4 and loop.stats.clip_crops == 75
    assert loop.stats.shared_forwards >= 2
    assert loop.stats.batch_fill == pytest.approx(75 / 80)


def test_a_corrupt_video_fails_alone(pooling: FeatureExtractor, videos: list[Path], tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(videos[-1].read_bytes()[:2000] + b"\x00" * 5000)
    loop = BatchingLoop(pooling, batch_clip_crops=20, decoders=2, stall_seconds=60)
    results = _extract_all(loop, [videos[0], corrupt, *videos[1:]])
    loop.close()
    assert isinstance(results[1], VideoError), results[1]
    for path, result in zip(videos, [results[0], *results[2:]], strict=True):
        expected = pooling.extract(path, crop_type="5-crop", batch_size=1).features
        np.testing.assert_array_equal(result.features, expected)  # type: ignore[union-attr]


def test_a_video_given_up_midway_leaves_the_loop_serving_the_others(
    pooling: FeatureExtractor, videos: list[Path]
) -> None:
    # While the backbone is held, a video hands over its first pieces, then its deadline passes:
    loop = BatchingLoop(pooling, batch_clip_crops=20, decoders=2, stall_seconds=60)
    with held_backbone(pooling) as gate:
        with pytest.raises(TaskTimeoutError, match="deadline"):
            loop.extract(videos[-1], crop_type="5-crop", deadline=time.monotonic() + 2)
        # it is given up, and what it had queued goes with it;
        assert not loop._pending and not loop._videos
        gate.set()
        # the others, before and after it, come out whole.
        results = _extract_all(loop, videos[:3])
        late = loop.extract(videos[3], crop_type="5-crop")
    loop.close()
    for path, result in zip(videos[:4], [*results, late], strict=True):
        expected = pooling.extract(path, crop_type="5-crop", batch_size=1).features
        np.testing.assert_array_equal(result.features, expected)  # type: ignore[union-attr]


def test_a_lone_short_batch_leaves_after_the_stall_time(
    pooling: FeatureExtractor, videos: list[Path]
) -> None:
    # One video decoding, another stuck before its first piece: the first one's short batch
    # leaves after stall_seconds, not when the stuck one ends.
    loop = BatchingLoop(pooling, batch_clip_crops=50, stall_seconds=0.5)
    stuck = loop._register()  # a video that never hands anything over
    try:
        started = time.monotonic()
        result = loop.extract(videos[1], crop_type="5-crop")
        assert time.monotonic() - started < 30
        assert result.shape == (2, 5, pooling.spec.feature_dim)
    finally:
        loop._unregister(stuck)
        loop.close()


def test_decoders_wait_while_the_queue_is_full(pooling: FeatureExtractor, videos: list[Path]) -> None:
    # The backbone is held: decoders may queue at most max_pending clip-crops plus one piece each.
    loop = BatchingLoop(pooling, batch_clip_crops=10, max_pending_clip_crops=10, decoders=2, stall_seconds=60)
    with held_backbone(pooling) as gate, ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(loop.extract, path, crop_type="5-crop") for path in videos[2:]]
        time.sleep(3)
        # 10 in the held forward, at most 10 queued, plus what the waiting decoders hold back.
        assert loop._pending_clip_crops <= 10 + 20
        gate.set()
        assert all(future.result(60).shape[0] >= 3 for future in futures)
    loop.close()


def test_real_backbone_features_match_the_per_video_pipeline(
    pretrained_dir: Path, videos: list[Path]
) -> None:
    # I3D with stand-in weights, center crops: three videos of 1, 2 and 3 clips share forwards of 4.
    i3d = FeatureExtractor("i3d", pretrained_dir=pretrained_dir, device="cpu")
    loop = BatchingLoop(i3d, batch_clip_crops=4, decoders=3, stall_seconds=60)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda path: loop.extract(path, crop_type="center"), videos[:3]))
    loop.close()
    assert loop.stats.shared_forwards >= 1
    for path, result in zip(videos[:3], results, strict=True):
        expected = i3d.extract(path, crop_type="center", batch_size=16).features
        assert result.shape == expected.shape
        rel = np.linalg.norm(result.features - expected) / np.linalg.norm(expected)
        assert rel <= 1e-5, (path.name, rel)


def test_two_inference_threads_run_forwards_side_by_side(
    pooling: FeatureExtractor, videos: list[Path]
) -> None:
    backbone = pooling.backbone
    original = backbone.forward
    running, most = 0, 0
    lock = threading.Lock()

    def slow(clips: torch.Tensor) -> torch.Tensor:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.3)
        with lock:
            running -= 1
        return original(clips)

    backbone.forward = slow  # type: ignore[method-assign]
    try:
        loop = BatchingLoop(pooling, batch_clip_crops=5, decoders=2, inference_threads=2, stall_seconds=60)
        results = _extract_all(loop, videos)
        loop.close()
    finally:
        del backbone.forward
    assert most == 2
    for path, result in zip(videos, results, strict=True):
        expected = pooling.extract(path, crop_type="5-crop", batch_size=1).features
        np.testing.assert_array_equal(result.features, expected)  # type: ignore[union-attr]


def test_loop_shape_is_full_batches_on_a_gpu_and_small_side_by_side_forwards_on_a_cpu() -> None:
    gpu, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert loop_shape(gpu, batch_size=16, crop_type="5-crop", decoders=16) == (80, 1)
    assert loop_shape(cpu, batch_size=16, crop_type="5-crop", decoders=2) == (5 * CPU_CLIPS_PER_FORWARD, 2)
    assert loop_shape(cpu, batch_size=1, crop_type="center", decoders=1) == (1, 1)
