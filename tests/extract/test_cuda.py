"""The extraction core on CUDA: the batched loop against the golden references, GPU transforms.

Skipped without CUDA (``VFX_REQUIRE_GPU=1`` makes them fail instead); ``benchmarks/gpu_acceptance.py``
runs them on the GPU machine. Golden fidelity of the per-video pipeline on CUDA is in
``test_golden.py``, out-of-memory splitting in ``test_out_of_memory.py``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import I3D
from tests.extract.test_golden import REFERENCES, TOLERANCE, relative_error
from vfx_tasks import FeatureExtractor
from vfx_tasks.extract.batching import BatchingLoop, loop_shape
from vfx_tasks.extract.clips import preprocess_clips
from vfx_tasks.extract.sampling import sample_clip_indices
from vfx_tasks.extract.video import VideoReader
from vfx_tasks.models import get_model_spec

pytestmark = pytest.mark.gpu

#: Three sample videos of 3, 4 and 2 clips; the first has I3D 5-crop reference features.
VIDEOS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


@pytest.mark.parametrize("precision", sorted(TOLERANCE))
def test_batched_loop_on_cuda_matches_the_references(
    precision: str, pretrained_dir: Path, sample_videos_dir: Path
) -> None:
    # Given I3D on the GPU and a loop of 3-clip forwards (15 clip-crops) that three videos share:
    # their 15, 20 and 10 clip-crops cannot fill such forwards without mixing, whatever the order
    extractor = FeatureExtractor("i3d", pretrained_dir=pretrained_dir, device="cuda", precision=precision)  # type: ignore[arg-type]
    batch_clip_crops, threads = loop_shape(extractor.device, batch_size=3, crop_type="5-crop", decoders=3)
    assert (batch_clip_crops, threads) == (15, 1)
    loop = BatchingLoop(extractor, batch_clip_crops=batch_clip_crops, decoders=3, inference_threads=threads,
                        stall_seconds=60)
    paths = [sample_videos_dir / name for name in VIDEOS]

    # When the three are extracted at once
    with ThreadPoolExecutor(len(paths)) as pool:
        results = list(pool.map(lambda path: loop.extract(path, crop_type="5-crop"), paths))
    loop.close()

    # Then forwards mixed videos, and each video's features are its own: the golden ones for the
    # first, the per-video pipeline's on the same GPU for the others
    assert loop.stats.shared_forwards >= 1
    assert [r.shape for r in results] == [(3, 5, 2048), (4, 5, 2048), (2, 5, 2048)]
    assert results[0].features.dtype == np.float32
    golden = REFERENCES[f"bigbuckbunny.mp4|{I3D}|5-crop"]
    assert relative_error(results[0].features, golden, I3D) <= TOLERANCE[precision]
    for path, result in zip(paths[1:], results[1:], strict=True):
        alone = extractor.extract(path, crop_type="5-crop", batch_size=3).features
        assert relative_error(result.features, alone, I3D) <= TOLERANCE[precision], path.name


@pytest.mark.parametrize("crop_type", ["center", "5-crop", "10-crop"])
def test_gpu_transforms_match_the_cpu_ones(crop_type: str, sample_videos_dir: Path) -> None:
    # Given two clips of a 720p video, preprocessed on the CPU and on the GPU
    spec = get_model_spec("i3d")
    with VideoReader(sample_videos_dir / "bigbuckbunny.mp4") as video:
        clips = sample_clip_indices(video.info.num_frames, clip_len=spec.clip_len,
                                    sampling_rate=spec.sampling_rate, num_clips_per_video=2,
                                    clip_sampling="sequential")
        on_cpu = preprocess_clips(video, clips, spec=spec, crop_type=crop_type, device=torch.device("cpu"))  # type: ignore[arg-type]
        on_gpu = preprocess_clips(video, clips, spec=spec, crop_type=crop_type, device=torch.device("cuda"))  # type: ignore[arg-type]

    # Then the GPU's tensor is on the GPU, laid out for the backbone as on the CPU
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.float32
    crops = {"center": 1, "5-crop": 5, "10-crop": 10}[crop_type]
    assert on_gpu.shape == on_cpu.shape == (2, crops, 3, 32, 224, 224)
    assert on_gpu.flatten(0, 1).is_contiguous(memory_format=torch.channels_last_3d)
    # and its pixels differ by one grey level at most: the GPU resizes in float32 and rounds,
    # the CPU in fixed point on uint8 (on the CPU, emulating the GPU's way moves 9-15% of the
    # values of these videos by one level, never more)
    difference = (on_gpu.cpu() - on_cpu).abs()
    one_grey_level = 1 / 255 / min(spec.std_rgb)
    assert float(difference.max()) <= one_grey_level * 1.001
    assert float((difference > 1e-4).float().mean()) <= 0.25
