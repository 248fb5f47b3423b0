"""NVDEC decoding through PyNvVideoCodec, for the benchmarks only.

The product has no NVDEC decoder yet (``vfx_tasks.extract.decoders`` holds decord and PyAV).
This module measures whether one is worth adding: how fast the GPU's own decoders read every
frame of a video, and the per-video pipeline on them, the frames staying on the GPU and going
through the product's own resize, crops and normalisation. Anything that fails here (the package
missing, no video decode capability in the driver, a codec NVDEC lacks) raises
:class:`NvdecUnavailable` with the reason, so a report can say why the NVDEC rows are empty.

API used (PyNvVideoCodec 2.x): ``SimpleDecoder(path, gpu_id=, use_device_memory=True,
output_color_type=OutputColorType.RGB)``, ``len(decoder)``, ``get_batch_frames_by_index(list)``,
each frame read with ``torch.from_dlpack``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vfx_tasks import FeatureExtractor
from vfx_tasks.extract.clips import DecodedClips, transform_clips
from vfx_tasks.extract.crops import num_crops
from vfx_tasks.extract.sampling import batch_slices
from vfx_tasks.extract.transforms import resize_short_side

#: Frames asked of the decoder at a time when reading a whole video.
READ_CHUNK_FRAMES = 64


class NvdecUnavailable(RuntimeError):
    """PyNvVideoCodec cannot be used here; the message says why."""


def import_nvdec() -> Any:
    """The ``PyNvVideoCodec`` module, or :class:`NvdecUnavailable` saying why not."""
    try:
        import PyNvVideoCodec
    except Exception as e:  # ImportError, or OSError for a missing driver library
        raise NvdecUnavailable(f"PyNvVideoCodec does not import ({type(e).__name__}: {e})") from e
    return PyNvVideoCodec


def nvdec_version() -> str:
    """``PyNvVideoCodec <version>`` or the reason it cannot be used."""
    try:
        return f"PyNvVideoCodec {getattr(import_nvdec(), '__version__', '?')}"
    except NvdecUnavailable as e:
        return f"not usable: {e}"


class NvdecVideo:
    """One video open on NVDEC; frames come back as ``(N, H, W, 3)`` uint8 RGB on the GPU."""

    def __init__(self, path: Path, *, gpu_id: int = 0) -> None:
        nvc = import_nvdec()
        self.path = path
        self.device = torch.device("cuda", gpu_id)
        try:
            self._decoder = nvc.SimpleDecoder(str(path), gpu_id=gpu_id, use_device_memory=True,
                                              output_color_type=nvc.OutputColorType.RGB)
            self.num_frames = len(self._decoder)
        except Exception as e:
            raise NvdecUnavailable(f"NVDEC cannot open {path.name} ({type(e).__name__}: {e})") from e

    def read_frames(self, frame_indices: np.ndarray) -> torch.Tensor:
        """The frames asked for, copied out of the decoder's surfaces (which it reuses)."""
        try:
            frames = self._decoder.get_batch_frames_by_index([int(i) for i in frame_indices])
            torch.cuda.synchronize(self.device)  # the decoder works on its own stream
            copied = torch.stack([_as_hwc(torch.from_dlpack(frame)) for frame in frames])
            torch.cuda.synchronize(self.device)  # copied before the decoder reuses its surfaces
        except Exception as e:  # an API this code was not written against says so in the report
            raise NvdecUnavailable(f"NVDEC failed on {self.path.name} ({type(e).__name__}: {e})") from e
        if copied.shape[0] != len(frame_indices) or copied.dim() != 4 or copied.shape[-1] != 3:
            raise NvdecUnavailable(f"NVDEC gave frames of shape {tuple(copied.shape)} for "
                                   f"{len(frame_indices)} RGB frames of {self.path.name}")
        return copied


def _as_hwc(frame: torch.Tensor) -> torch.Tensor:
    """``(H, W, 3)`` whether the decoder gave interleaved or planar RGB."""
    if frame.dim() == 3 and frame.shape[-1] != 3 and frame.shape[0] == 3:
        return frame.permute(1, 2, 0)
    return frame


def run_nvdec_videos(extractor: FeatureExtractor, videos: list[Path], *, crop_type: str, batch_size: int,
                     num_clips: int, **_: object) -> list[np.ndarray]:
    """The per-video pipeline on NVDEC: each batch's distinct frames decoded on the GPU, resized
    there, then the product's crops, normalisation and backbone. No decode-ahead thread."""
    spec = extractor.spec
    results = []
    for path in videos:
        video = NvdecVideo(path, gpu_id=extractor.device.index or 0)
        clips = extractor.clips_of(video.num_frames, num_clips, "sequential")
        features = np.empty((len(clips), num_crops(crop_type), spec.feature_dim), dtype=np.float32)  # type: ignore[arg-type]
        for batch in batch_slices(len(clips), batch_size):
            unique, positions = np.unique(clips[batch], return_inverse=True)
            frames = video.read_frames(unique).permute(0, 3, 1, 2)
            resized = resize_short_side(frames, spec.resize_short_side).permute(0, 2, 3, 1)
            decoded = DecodedClips(resized, positions.reshape(clips[batch].shape))
            inputs = transform_clips(decoded, spec=spec, crop_type=crop_type, device=extractor.device)  # type: ignore[arg-type]
            features[batch] = extractor.embed(inputs).cpu().numpy()
        results.append(features)
    return results


def _read_whole(path: Path) -> int:
    video = NvdecVideo(path)
    for start in range(0, video.num_frames, READ_CHUNK_FRAMES):
        video.read_frames(np.arange(start, min(start + READ_CHUNK_FRAMES, video.num_frames)))
    return video.num_frames


def nvdec_decode_rate(videos: list[Path], *, threads: int) -> float:
    """Frames/s decoding every frame of ``videos`` with ``threads`` NVDEC sessions at once
    (after one untimed video, which opens the first session)."""
    _read_whole(videos[0])
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        frames = sum(pool.map(_read_whole, videos))
    return frames / (time.perf_counter() - started)
