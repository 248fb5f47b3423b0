"""The per-video pipeline: decode -> sample -> transform -> backbone -> pool, as the head pools.

Knows nothing about queues. :class:`FeatureExtractor` loads a model once and serves any number
of videos; :func:`extract_features` is the one-call convenience on top of it. Every model, the
seeds and the model zoo alike, runs through the same steps with its own spec: its sampler, its
resize and crop geometry, its mean/std, its input layout (``NCTHW`` clips or ``NCHW`` frames)
and its head's pooling.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vfx_tasks.errors import ConfigurationError, DeviceOutOfMemoryError
from vfx_tasks.extract.clips import DecodedClips, decode_clips, transform_clips
from vfx_tasks.extract.crops import CropType, num_crops, validate_crop_type
from vfx_tasks.extract.decoders import DecoderName, open_video, validate_decoder
from vfx_tasks.extract.device import Precision, autocast, resolve_device, validate_precision
from vfx_tasks.extract.sampling import (
    ClipSampling,
    batch_slices,
    clip_frame_indices,
    validate_clip_sampling,
    validate_num_clips,
)
from vfx_tasks.extract.transforms import to_model_layout
from vfx_tasks.models import ModelSpec, get_model_spec
from vfx_tasks.models.backbone import load_backbone
from vfx_tasks.models.pooling import pool_feature_maps
from vfx_tasks.settings import DEFAULT_MAX_PIXELS, Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoFeatures:
    """Features of one video and how they were obtained. ``repr`` shows shapes, not data."""

    features: np.ndarray = field(repr=False)
    """``(num_clips, n_crops, D)`` float32."""
    num_frames: int
    fps: float
    seconds: float
    batch_size: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.features.shape)

    def __repr__(self) -> str:
        return (
            f"VideoFeatures(shape={self.shape}, num_frames={self.num_frames}, fps={self.fps:.3g}, "
            f"seconds={self.seconds:.3g}, batch_size={self.batch_size})"
        )


class FeatureExtractor:
    """A loaded model plus its preprocessing; reuse it for many videos.

    Args:
        model: Full model name or alias (see :func:`vfx_tasks.models.model_names`), or a spec
            (a user's own config: :func:`vfx_tasks.models.resolve_model`).
        pretrained_dir: Folder with the checkpoint; default from :class:`Settings`.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, ``fp16`` or ``bf16`` autocast for the backbone.
        max_pixels: most pixels a video's frames may have (0: any); larger videos are refused
            before decoding (:class:`~vfx_tasks.errors.VideoTooLargeError`).
    """

    def __init__(
        self,
        model: str | ModelSpec,
        *,
        pretrained_dir: str | os.PathLike[str] | None = None,
        device: str = "auto",
        precision: Precision = "fp32",
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.spec = model if isinstance(model, ModelSpec) else get_model_spec(model)
        self.max_pixels = max_pixels
        self.precision = validate_precision(precision)
        self.device = resolve_device(device)
        if pretrained_dir is None:
            pretrained_dir = Settings.from_env().pretrained_dir
        # The trunk: the backbone (and neck) whose output the head pools.
        self.backbone: nn.Module = load_backbone(self.spec, Path(pretrained_dir)).to(self.device)
        self._memory_format = (
            torch.channels_last_3d if self.spec.channels_last_3d else torch.contiguous_format
        )
        self.backbone.to(memory_format=self._memory_format)
        if self.device.type == "cuda":
            # Input shapes repeat (batch x crops x 3 x 32 x 224 x 224): let cuDNN pick its kernels once.
            torch.backends.cudnn.benchmark = True

    def __repr__(self) -> str:
        return (
            f"FeatureExtractor(model={self.spec.name!r}, device={self.device}, "
            f"precision={self.precision!r})"
        )

    def extract(
        self,
        video_path: str | os.PathLike[str],
        *,
        crop_type: CropType = "5-crop",
        num_clips_per_video: int = -1,
        batch_size: int = 16,
        clip_sampling: ClipSampling = "sequential",
        decoder: DecoderName = "decord",
    ) -> VideoFeatures:
        """Compute the features of one video.

        ``decoder`` picks the video backend (:func:`~vfx_tasks.extract.decoders.open_video`);
        ``decord``, the default, made the reference features.

        Raises:
            VideoError: the video cannot be opened or decoded.
            ConfigurationError: an argument has an unsupported value.
            DeviceOutOfMemoryError: even a single clip does not fit on the device.
        """
        check_options(crop_type, num_clips_per_video, clip_sampling, decoder)
        batch_slices(1, batch_size)  # validates batch_size before any decoding
        started = time.perf_counter()
        spec = self.spec
        with open_video(video_path, decoder=decoder, max_pixels=self.max_pixels) as video:
            clips = self.clips_of(
                video.info.num_frames, num_clips_per_video, clip_sampling, fps=video.info.fps
            )
            features = np.empty((len(clips), num_crops(crop_type), spec.feature_dim), dtype=np.float32)
            batches = batch_slices(len(clips), batch_size)
            # One decode thread keeps the next batch ready while this one runs through the
            # model: decord, PyAV and torch release the GIL, so decoding overlaps the backbone.
            decode = functools.partial(
                decode_clips, video, short_side=spec.resize_short_side, device=self.device,
                preprocessing=spec.preprocessing,
            )
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vfx-decode") as decoder:
                upcoming = decoder.submit(decode, clips[batches[0]])
                for index, batch in enumerate(batches):
                    decoded = upcoming.result()
                    if index + 1 < len(batches):
                        upcoming = decoder.submit(decode, clips[batches[index + 1]])
                    features[batch] = self._embed_decoded(decoded, crop_type=crop_type).cpu().numpy()
                    del decoded
        seconds = time.perf_counter() - started
        logger.debug("%s: %s clips in %.2f s", video_path, features.shape, seconds)
        return VideoFeatures(features, video.info.num_frames, video.info.fps, seconds, batch_size)

    def clips_of(
        self,
        num_frames: int,
        num_clips_per_video: int,
        clip_sampling: ClipSampling,
        *,
        fps: float | None = None,
    ) -> np.ndarray:
        """``(num_clips, clip_len)`` frame numbers of a video's clips for this model's sampler."""
        return clip_frame_indices(
            self.spec, num_frames, fps=fps, num_clips_per_video=num_clips_per_video,
            clip_sampling=clip_sampling,
        )

    @torch.inference_mode()
    def embed(self, clips_bvcthw: torch.Tensor) -> torch.Tensor:
        """Run the model on ``(B, n_crops, C, T, H, W)`` and pool as its head does.

        Returns ``(B, n_crops, D)`` float32.
        """
        batch, views = clips_bvcthw.shape[:2]
        with autocast(self.device, self.precision):
            clips = clips_bvcthw.flatten(0, 1).contiguous(memory_format=self._memory_format)
            feature_maps = self.backbone(to_model_layout(clips, self.spec.input_format))
        pooled = pool_feature_maps(feature_maps, self.spec, num_clips=batch * views)
        if pooled.shape[-1] != self.spec.feature_dim:
            raise ConfigurationError(
                f"Model {self.spec.name} ({self.spec.config_name or 'built in'}) gives "
                f"{pooled.shape[-1]}-d features, but its head takes {self.spec.feature_dim} "
                "(cls_head.in_channels); the config's head does not fit its backbone."
            )
        return pooled.view(batch, views, -1)

    def _embed_decoded(self, decoded: DecodedClips, *, crop_type: CropType) -> torch.Tensor:
        """Transform and embed a batch of clips: ``(B, n_crops, D)`` float32.

        Out of memory in either step (a 10-crop batch is gigabytes of float32 before the backbone
        sees it) splits the batch in halves, down to one clip; then it is a
        :class:`DeviceOutOfMemoryError`, which the queue retries later.
        """
        try:
            model_input = transform_clips(decoded, spec=self.spec, crop_type=crop_type, device=self.device)
            return self.embed(model_input)
        except (torch.OutOfMemoryError, MemoryError) as e:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            num_clips = len(decoded.positions_bt)
            if num_clips == 1:
                raise DeviceOutOfMemoryError(
                    f"One clip of {self.spec.name} does not fit in {self.device} memory; free the "
                    "GPU (or RAM), use a smaller crop type, or --precision fp16."
                ) from e
            half = num_clips // 2
            logger.warning(
                "Out of memory on %d clips; retrying as %d + %d", num_clips, half, num_clips - half
            )
            return torch.cat(
                [self._embed_decoded(part, crop_type=crop_type) for part in decoded.split(half)]
            )


def check_options(crop_type: str, num_clips_per_video: int, clip_sampling: str, decoder: str) -> None:
    """Refuse unsupported extraction options before any decoding (:class:`ConfigurationError`)."""
    validate_crop_type(crop_type)
    validate_num_clips(num_clips_per_video)
    validate_clip_sampling(clip_sampling)
    validate_decoder(decoder)


def extract_features(
    video_path: str | os.PathLike[str],
    *,
    model: str | ModelSpec,
    crop_type: CropType = "5-crop",
    num_clips_per_video: int = -1,
    batch_size: int = 16,
    clip_sampling: ClipSampling = "sequential",
    pretrained_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    precision: Precision = "fp32",
    decoder: DecoderName = "decord",
) -> np.ndarray:
    """Compute one video's features: ``(num_clips, n_crops, D)`` float32.

    Loads the model on every call; use :class:`FeatureExtractor` for many videos.
    """
    extractor = FeatureExtractor(model, pretrained_dir=pretrained_dir, device=device, precision=precision)
    return extractor.extract(
        video_path,
        crop_type=crop_type,
        num_clips_per_video=num_clips_per_video,
        batch_size=batch_size,
        clip_sampling=clip_sampling,
        decoder=decoder,
    ).features
