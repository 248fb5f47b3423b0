"""A batch of clips on its way to the backbone: decode each distinct frame once, in bounded
chunks resized as they come, then crop, normalise and lay out on the model's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vfx_tasks.extract.crops import CropType
from vfx_tasks.extract.decoders import Decoder
from vfx_tasks.extract.transforms import frames_to_model_input, resize_short_side, resize_short_side_mmcv
from vfx_tasks.models import ModelSpec
from vfx_tasks.models.spec import Preprocessing

#: At most this many bytes of full-size frames are decoded at once. Each chunk is resized to the
#: model's short side before the next one is decoded, so a batch of a 4K or 8K video needs about
#: as much memory as one of a 360p video (a 16-clip batch of 4K frames is 12 GiB at full size).
DECODE_CHUNK_BYTES = 128 * 1024 * 1024
_CPU = torch.device("cpu")


@dataclass(frozen=True)
class DecodedClips:
    """The distinct frames a batch of clips needs, resized, and where each clip finds its frames."""

    frames_nhwc: torch.Tensor
    """``(N, H, W, 3)`` uint8 RGB frames with the model's short side, on the model's device."""
    positions_bt: np.ndarray
    """``(B, T)`` indices into ``frames_nhwc``."""

    def split(self, num_clips: int) -> tuple[DecodedClips, DecodedClips]:
        """The first ``num_clips`` clips and the rest (sharing the frames)."""
        return (
            DecodedClips(self.frames_nhwc, self.positions_bt[:num_clips]),
            DecodedClips(self.frames_nhwc, self.positions_bt[num_clips:]),
        )


def decode_clips(
    video: Decoder,
    clips_bt: np.ndarray,
    *,
    short_side: int,
    device: torch.device = _CPU,
    chunk_bytes: int | None = None,
    preprocessing: Preprocessing = "torchvision",
) -> DecodedClips:
    """Decode each distinct frame of a batch of clips once, in frame order, and resize it.

    Frames are decoded in chunks of at most ``chunk_bytes`` and each chunk is moved to ``device``
    and resized there (:func:`resize_short_side`, the operation the transform would apply), so
    the features are the same as when a whole batch is resized at once.

    Args:
        video: an open video, from any backend of :func:`~vfx_tasks.extract.decoders.open_video`.
        clips_bt: ``(B, T)`` frame numbers of each clip, as :func:`sample_clip_indices` gives.
        short_side: the model's resize target (``spec.resize_short_side``).
        device: where the frames are resized and kept (pinned host memory on the way to a GPU).
        chunk_bytes: at most this many bytes of full-size frames at once (default
            :data:`DECODE_CHUNK_BYTES`).
        preprocessing: ``torchvision`` resizes with torch on ``device``; ``mmaction2`` with
            OpenCV on the CPU, as mmaction2's test pipeline, before the frames move to ``device``.
    """
    unique_frames, positions = np.unique(clips_bt, return_inverse=True)
    frame_bytes = max(1, video.info.height * video.info.width * 3)
    frames_per_chunk = max(1, (chunk_bytes or DECODE_CHUNK_BYTES) // frame_bytes)
    resized: list[torch.Tensor] = []
    for start in range(0, len(unique_frames), frames_per_chunk):
        resized.append(_resize_chunk(
            video.read_frames(unique_frames[start : start + frames_per_chunk]),
            short_side=short_side, device=device, preprocessing=preprocessing,
        ))  # the full-size chunk is freed before the next one is decoded
    frames = resized[0] if len(resized) == 1 else torch.cat(resized)
    return DecodedClips(frames, positions.reshape(clips_bt.shape))


def _resize_chunk(
    frames_nhwc: np.ndarray, *, short_side: int, device: torch.device, preprocessing: Preprocessing
) -> torch.Tensor:
    """Full-size ``(N, H, W, 3)`` uint8 frames at the model's short side, on ``device``."""
    if preprocessing == "mmaction2":
        return torch.from_numpy(resize_short_side_mmcv(frames_nhwc, short_side)).to(device)
    chunk = torch.from_numpy(frames_nhwc)
    if device.type == "cuda":
        chunk = chunk.pin_memory().to(device, non_blocking=True)
    # A channels-last NCHW view: the fast uint8 path of the resize.
    return resize_short_side(chunk.permute(0, 3, 1, 2), short_side).permute(0, 2, 3, 1)


def transform_clips(
    decoded: DecodedClips, *, spec: ModelSpec, crop_type: CropType, device: torch.device
) -> torch.Tensor:
    """Turn decoded frames into the backbone's input on ``device`` (where they already are when
    :func:`decode_clips` was given the same device).

    Returns:
        ``(B, n_crops, 3, T, crop_size, crop_size)`` float32 on ``device``.
    """
    frames = decoded.frames_nhwc.to(device, non_blocking=True)
    return frames_to_model_input(
        frames,
        decoded.positions_bt,
        short_side=spec.resize_short_side,
        crop_size=spec.crop_size,
        crop_type=crop_type,
        mean_rgb=spec.mean_rgb,
        std_rgb=spec.std_rgb,
        channels_last=spec.channels_last_3d,
        centre_rounding="floor" if spec.preprocessing == "mmaction2" else "half_even",
    )


def preprocess_clips(
    video: Decoder,
    clips_bt: np.ndarray,
    *,
    spec: ModelSpec,
    crop_type: CropType,
    device: torch.device,
) -> torch.Tensor:
    """Decode and transform one batch of clips: :func:`decode_clips` then :func:`transform_clips`."""
    decoded = decode_clips(video, clips_bt, short_side=spec.resize_short_side, device=device,
                           preprocessing=spec.preprocessing)
    return transform_clips(decoded, spec=spec, crop_type=crop_type, device=device)
