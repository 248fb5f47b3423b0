"""Which frames make up each clip: the original tool's sequential rule and a uniform option, and
mmaction2's test-time samplers for the model-zoo models (:func:`clip_frame_indices`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from vfx_tasks.errors import ConfigurationError
from vfx_tasks.models.spec import SEGMENT_SAMPLERS, ModelSpec, Sampler

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


@dataclass(frozen=True)
class FrameSampler:
    """Which frames make a model's clips: the part of a spec that clip starts depend on.

    A manifest records these four values, so that a reader (the index, an export) finds every
    clip's frames again without model code. See :func:`clip_frame_indices` for the rules.
    """

    sampler: Sampler = "video_features"
    clip_len: int = 32
    sampling_rate: int = 2
    #: ``SampleFrames(target_fps=...)`` (X3D): frames picked as if the video ran at this rate.
    target_fps: float | None = None

    @classmethod
    def of(cls, spec: ModelSpec) -> FrameSampler:
        return cls(spec.sampler, spec.clip_len, spec.sampling_rate, spec.target_fps)

    def clip_indices(
        self,
        num_frames: int,
        *,
        fps: float | None = None,
        num_clips_per_video: int = -1,
        clip_sampling: ClipSampling = "sequential",
    ) -> np.ndarray:
        """The frame numbers of every clip, ``(num_clips, clip_len)`` int64 (:func:`clip_frame_indices`)."""
        validate_num_clips(num_clips_per_video)
        validate_clip_sampling(clip_sampling)
        if num_frames <= 0:
            raise ConfigurationError(f"Cannot sample clips from a video of {num_frames} frames.")
        if self.sampler in SEGMENT_SAMPLERS:
            return segment_indices(num_frames, segments=self.clip_len,  # type: ignore[arg-type]
                                   num_windows=max(1, num_clips_per_video), rule=self.sampler)
        if self.sampler == "sample_frames" and clip_sampling == "uniform" and num_clips_per_video != -1:
            return sample_frames_test_indices(
                num_frames, clip_len=self.clip_len, frame_interval=self.sampling_rate,
                num_clips=num_clips_per_video, target_fps=self.target_fps, fps=fps,
            )
        if self.sampler == "sample_frames" and self.target_fps:
            return _retimed_sequential_indices(num_frames, self, fps=fps,
                                               num_clips_per_video=num_clips_per_video)
        return sample_clip_indices(num_frames, clip_len=self.clip_len, sampling_rate=self.sampling_rate,
                                   num_clips_per_video=num_clips_per_video, clip_sampling=clip_sampling)

    def num_clips(self, num_frames: int, *, fps: float | None = None, num_clips_per_video: int = -1) -> int:
        """How many clips :meth:`clip_indices` gives, computed without making them (a frame count
        read from Redis or a file may be anything; this costs nothing whatever it is)."""
        if num_clips_per_video != -1:
            return num_clips_per_video
        if self.sampler in SEGMENT_SAMPLERS:
            return 1
        return math.ceil(num_frames / self.span_frames(fps))

    def span_frames(self, fps: float | None = None) -> float:
        """Frames from one sequential clip's start to the next: ``clip_len x sampling_rate``, spread
        to ``fps`` for a ``target_fps`` model (fractional then); 0 for segment samplers, whose clips
        each cover a share of the video rather than a fixed number of frames."""
        if self.sampler in SEGMENT_SAMPLERS:
            return 0
        if self.sampler == "sample_frames" and self.target_fps:
            return _retimed_span(self.clip_len, self.sampling_rate, self.target_fps, fps)
        return self.clip_len * self.sampling_rate


def clip_frame_indices(
    spec: ModelSpec,
    num_frames: int,
    *,
    fps: float | None = None,
    num_clips_per_video: int = -1,
    clip_sampling: ClipSampling = "sequential",
) -> np.ndarray:
    """The frame numbers of every clip of a video for ``spec``'s sampler, ``(num_clips, clip_len)`` int64.

    * ``video_features`` (the seeds): :func:`sample_clip_indices`, the original tool's rule.
    * ``sample_frames``: sequential clips as :func:`sample_clip_indices` does; ``uniform`` with
      ``N`` clips is mmaction2's test-time ``SampleFrames`` (:func:`sample_frames_test_indices`).
      With ``target_fps`` (X3D) a clip's frames are spread as if the video ran at that rate.
    * ``segments`` / ``uniform_sample``: each clip takes one frame from each of ``clip_len`` equal
      segments of its window, by mmaction2's ``SampleFrames(clip_len=1)`` or ``UniformSample``
      rounding. The window is the whole video (``num_clips_per_video`` -1 or 1: exactly the frames
      mmaction2's test pipeline feeds) or one of ``N`` equal consecutive parts; ``clip_sampling``
      does not apply.

    ``fps`` matters only with ``target_fps``; unknown (``None`` or 0), it counts as the target rate.
    """
    return FrameSampler.of(spec).clip_indices(
        num_frames, fps=fps, num_clips_per_video=num_clips_per_video, clip_sampling=clip_sampling
    )


def _retimed_span(clip_len: int, frame_interval: int, target_fps: float, fps: float | None) -> float:
    """Frames a clip covers when sampled at ``target_fps`` (mmaction2's ``ori_clip_len``)."""
    # A rate that is no rate (0, negative, NaN: a broken container, or a value read from Redis)
    # counts as unknown.
    ratio = fps / target_fps if fps and math.isfinite(fps) and fps > 0 else 1.0
    return float(np.maximum(1, clip_len * frame_interval * ratio))


def _retimed_sequential_indices(
    num_frames: int, spec: FrameSampler, *, fps: float | None, num_clips_per_video: int
) -> np.ndarray:
    """Sequential clips of a ``target_fps`` model: consecutive spans of ``ori_clip_len`` frames."""
    assert spec.target_fps is not None
    span = _retimed_span(spec.clip_len, spec.sampling_rate, spec.target_fps, fps)
    offsets = np.linspace(0, span - 1, spec.clip_len).astype(np.int64)
    count = math.ceil(num_frames / span) if num_clips_per_video == -1 else num_clips_per_video
    clips = (np.arange(count) * span).astype(np.int64)[:, None] + offsets[None, :]
    if num_clips_per_video != -1:
        return clips % num_frames
    if clips[-1, -1] >= num_frames:  # as sample_clip_indices: the last clip loops its own frames
        inside = clips[-1][clips[-1] < num_frames]
        clips[-1] = np.resize(inside, spec.clip_len)
    return clips


def sample_frames_test_indices(
    num_frames: int,
    *,
    clip_len: int,
    frame_interval: int,
    num_clips: int,
    target_fps: float | None = None,
    fps: float | None = None,
) -> np.ndarray:
    """mmaction2 1.2.0's test-time ``SampleFrames`` for 3-D clips: ``num_clips`` clips from the
    first to the last possible start, evenly (one clip: the middle), frames wrapped at the end."""
    if target_fps:
        covered = _retimed_span(clip_len, frame_interval, target_fps, fps)
    else:
        covered = (clip_len - 1) * frame_interval + 1
    max_offset = max(num_frames - covered, 0)
    if num_clips > 1:
        if target_fps:  # aligned with PySlowFast, as mmaction2 does
            starts = np.arange(num_clips) * np.floor(max_offset / float(num_clips - 1))
        else:
            starts = np.round(np.arange(num_clips) * (max_offset / float(num_clips - 1)))
    else:
        starts = np.array([max_offset // 2])
    if target_fps:
        offsets = np.linspace(0, covered - 1, clip_len).astype(np.int32)
    else:
        offsets = np.arange(clip_len) * frame_interval
    return np.mod(starts[:, None] + offsets[None, :], num_frames).astype(np.int64)


def segment_indices(
    num_frames: int,
    *,
    segments: int,
    num_windows: int = 1,
    rule: Literal["segments", "uniform_sample"] = "segments",
) -> np.ndarray:
    """One frame from each of ``segments`` equal segments of each of ``num_windows`` equal windows.

    ``segments``: mmaction2's test-time ``SampleFrames(clip_len=1, num_clips=segments)``, the
    middle of each segment. ``uniform_sample``: its test-time ``UniformSample(clip_len=segments)``.
    Over one window (the whole video) both give exactly mmaction2's frames.
    """
    bounds = (np.arange(num_windows + 1) * num_frames) // num_windows
    clips = np.empty((num_windows, segments), dtype=np.int64)
    for window, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        length = max(int(end - start), 1)
        if rule == "segments":
            interval = length / float(segments)
            inside = np.arange(segments) * interval + interval / 2.0
        else:
            segment = float(length - 1) / segments
            inside = np.array([int(np.round(segment * i)) + int(segment / 2) for i in range(segments)])
        clips[window] = (start + inside).astype(np.int64)
    return clips % num_frames
