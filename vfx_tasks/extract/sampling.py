"""Which frames make up each clip: the original tool's sequential rule and a uniform option."""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np

from vfx_tasks.errors import ConfigurationError

ClipSampling = Literal["sequential", "uniform"]
CLIP_SAMPLINGS: tuple[str, ...] = get_args(ClipSampling)


def validate_clip_sampling(clip_sampling: str) -> ClipSampling:
    if clip_sampling not in CLIP_SAMPLINGS:
        raise ConfigurationError(
            f"Invalid clip sampling ({clip_sampling!r}). Supported values are {', '.join(CLIP_SAMPLINGS)}."
        )
    return clip_sampling  # type: ignore[return-value]


def validate_num_clips(num_clips_per_video: int) -> int:
    if num_clips_per_video != -1 and num_clips_per_video < 1:
        raise ConfigurationError(
            f"Invalid num_clips_per_video ({num_clips_per_video}). Use -1 for all clips or a number >= 1."
        )
    return num_clips_per_video


def sample_clip_indices(
    num_frames: int,
    *,
    clip_len: int,
    sampling_rate: int,
    num_clips_per_video: int = -1,
    clip_sampling: ClipSampling = "sequential",
) -> np.ndarray:
    """Return the frame numbers of every clip, ``(num_clips, clip_len)`` int64.

    ``sequential`` (the original tool's rule): clip ``i`` starts at frame ``i * clip_len *
    sampling_rate`` and takes every ``sampling_rate``-th frame.

    * ``num_clips_per_video == -1``: ``ceil(num_frames / span)`` clips cover the whole video
      (``span = clip_len * sampling_rate``). The last clip, where it would run past the end,
      loops the frames of the last partial segment: ``last_start, last_start + rate, ...``
      repeated, with ``last_start = (num_frames // span) * span``.
    * ``num_clips_per_video == N``: the first ``N`` clips, frame numbers wrapped modulo
      ``num_frames`` (so short videos loop from the start).

    ``uniform``: ``N`` clips spread evenly over the video (centred in ``N`` equal segments, as
    mmaction2's test-time ``SampleFrames``), frame numbers wrapped modulo ``num_frames``.
    With ``N == -1`` it is the same as ``sequential``.
    """
    validate_num_clips(num_clips_per_video)
    validate_clip_sampling(clip_sampling)
    if num_frames <= 0:
        raise ConfigurationError(f"Cannot sample clips from a video of {num_frames} frames.")
    span = clip_len * sampling_rate
    offsets = np.arange(clip_len, dtype=np.int64) * sampling_rate

    if num_clips_per_video == -1:
        num_clips = math.ceil(num_frames / span)
        clips = np.arange(num_clips, dtype=np.int64)[:, None] * span + offsets[None, :]
        last_start = (num_frames // span) * span
        if clips[-1, -1] >= num_frames:
            tail = np.arange(last_start, num_frames, sampling_rate, dtype=np.int64)
            clips[-1] = np.resize(tail, clip_len)
        return clips

    if clip_sampling == "sequential":
        starts = np.arange(num_clips_per_video, dtype=np.int64) * span
    else:
        covered = (clip_len - 1) * sampling_rate + 1
        segment = max(num_frames - covered + 1, 1) / num_clips_per_video
        starts = (np.arange(num_clips_per_video) * segment + segment / 2).astype(np.int64)
        if num_frames < covered:
            starts[:] = 0
    return (starts[:, None] + offsets[None, :]) % num_frames


def batch_slices(num_clips: int, batch_size: int) -> list[slice]:
    """Split ``num_clips`` clips into consecutive batches of ``batch_size`` (``-1``: one batch)."""
    if batch_size == -1:
        return [slice(0, num_clips)]
    if batch_size < 1:
        raise ConfigurationError(f"Invalid batch_size ({batch_size}). Use -1 (all clips at once) or >= 1.")
    return [slice(start, min(start + batch_size, num_clips)) for start in range(0, num_clips, batch_size)]
