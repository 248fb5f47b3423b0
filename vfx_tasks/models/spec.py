"""The typed description of a supported model: everything the pipeline needs to know."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

#: ImageNet statistics on the 0-1 scale, shared by both published pipelines.
IMAGENET_MEAN_RGB: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: How a batch of clips is laid out for the backbone: ``NCTHW`` clips for 3-D backbones, ``NCHW``
#: frames for 2-D ones (each clip's frames one after the other, as mmaction2's ``FormatShape``).
InputFormat = Literal["NCTHW", "NCHW"]
INPUT_FORMATS: tuple[str, ...] = get_args(InputFormat)

#: Which frames make a clip (see :func:`vfx_tasks.extract.sampling.clip_frame_indices`):
#: ``video_features`` the original tool's rule (the two seed models); ``sample_frames``
#: mmaction2's ``SampleFrames`` (``clip_len`` frames every ``frame_interval``); ``segments`` its
#: ``SampleFrames`` with ``clip_len=1`` (TSN-style: one frame from each of ``clip_len`` segments of a
#: window); ``uniform_sample`` its ``UniformSample`` (the same idea, its own rounding).
Sampler = Literal["video_features", "sample_frames", "segments", "uniform_sample"]
SEGMENT_SAMPLERS: tuple[str, ...] = ("segments", "uniform_sample")

#: How frames are resized and where crops sit: ``torchvision`` (antialiased bilinear resize,
#: centre offsets rounded half to even, as the original tool) or ``mmaction2`` (OpenCV's bilinear
#: resize through mmcv, sizes rounded half up, centre offsets floored, as mmaction2's test pipeline).
Preprocessing = Literal["torchvision", "mmaction2"]

#: How the backbone's (or neck's) output becomes one vector per clip-crop, as the head pools it:
#: ``avg3d`` mean over (T, H, W); ``slowfast`` the fast then the slow pathway's means, concatenated
#: (SlowFastHead's order); ``identity`` the backbone already returns ``(N, D)``; ``segments2d`` mean
#: over (H, W) of each frame, then over the clip's frames (TSN/TSM consensus); ``cls_token`` MViT's
#: class token; ``patch_mean`` the mean of MViT's patch tokens.
Pooling = Literal["avg3d", "slowfast", "identity", "segments2d", "cls_token", "patch_mean"]


@dataclass(frozen=True)
class ModelSpec:
    """One backbone and the preprocessing it was trained with.

    Attributes:
        name: The full mmaction2 model-zoo name (or, for a user's config, its file name).
        aliases: Short names accepted wherever a model name is.
        backbone_config: mmaction2 registry config of the backbone (``type`` plus arguments),
            identical to what the model-zoo config resolves to, with ``pretrained`` disabled.
        feature_dim: Size ``D`` of one clip feature: what the head's classifier receives.
        clip_len: Frames per clip (for segment samplers: segments per clip).
        sampling_rate: Stride between the sampled frames of a clip (1 for segment samplers).
        resize_short_side: Short side of the frames after resizing, in pixels.
        crop_size: Side of the square crops fed to the backbone, in pixels.
        mean_rgb, std_rgb: Normalisation on the 0-1 scale, RGB order.
        checkpoint_filename: File name of the checkpoint in the pretrained directory.
        checkpoint_url: Where the official checkpoint is downloaded from.
        channels_last_3d: Run the backbone on channels-last 3-D tensors (NTHWC in memory), which
            suits convolution kernels: on the CPU I3D ran 1.27x faster, Swin 0.94x (so it stays
            off there); see benchmarks/memory_format.py.
        family: The mmaction2 model-zoo family (``i3d``, ``tsm``...); ``custom`` for a user's config.
        neck_config: mmaction2 config of the neck whose output the head pools (TPN), or ``None``.
        pooling: How the head pools the backbone's (or neck's) output (:data:`Pooling`).
        input_format: ``NCTHW`` or ``NCHW`` (2-D backbones, frames averaged per clip).
        sampler: Which frames make a clip (:data:`Sampler`).
        target_fps: ``SampleFrames(target_fps=...)``: frames are picked as if the video ran at
            this rate (X3D); ``None`` otherwise.
        preprocessing: Resize and crop geometry (:data:`Preprocessing`).
        config_path: The mmaction2 config file the spec was read from (``None`` for the seeds).
        config_name: Its name as recorded in a manifest (``configs/recognition/<family>/<file>``).
        config_sha256: sha256 of the resolved config (its ``_base_`` files merged).
        checkpoint_file: A user's own checkpoint, read from this path instead of the pretrained
            directory (``None``: ``<pretrained_dir>/<checkpoint_filename>``).
        checkpoint_sha256: The whole sha256 the checkpoint must have, where a run pinned it (a
            user's own weights); ``None``: only the prefix in the file name is checked.
    """

    name: str
    aliases: tuple[str, ...]
    backbone_config: dict[str, Any] = field(repr=False)
    feature_dim: int
    checkpoint_filename: str
    checkpoint_url: str
    clip_len: int = 32
    sampling_rate: int = 2
    resize_short_side: int = 256
    crop_size: int = 224
    mean_rgb: tuple[float, float, float] = IMAGENET_MEAN_RGB
    std_rgb: tuple[float, float, float] = IMAGENET_STD_RGB
    channels_last_3d: bool = False
    family: str = "custom"
    neck_config: dict[str, Any] | None = field(default=None, repr=False)
    pooling: Pooling = "avg3d"
    input_format: InputFormat = "NCTHW"
    sampler: Sampler = "video_features"
    target_fps: float | None = None
    preprocessing: Preprocessing = "torchvision"
    config_path: str | None = field(default=None, repr=False)
    config_name: str | None = None
    config_sha256: str | None = field(default=None, repr=False)
    checkpoint_file: str | None = field(default=None, repr=False)
    checkpoint_sha256: str | None = field(default=None, repr=False)

    @property
    def clip_span_frames(self) -> int:
        """Frames a clip covers from its first sample to the next clip's start (32 x 2 = 64).

        0 for segment samplers, whose clips cover a share of the video (the whole video, or one of
        ``N`` equal parts with ``num_clips_per_video=N``) rather than a fixed number of frames.
        """
        if self.sampler in SEGMENT_SAMPLERS:
            return 0
        return self.clip_len * self.sampling_rate

    @property
    def checkpoint_sha256_prefix(self) -> str | None:
        """The leading sha256 hex digits that OpenMMLab puts at the end of its file names."""
        stem = self.checkpoint_filename.rsplit(".", 1)[0]
        tail = stem.rsplit("-", 1)[-1]
        if len(tail) == 8 and all(c in "0123456789abcdef" for c in tail):
            return tail
        return None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one clip-crop as the backbone takes it: ``(3, T, S, S)`` or ``(T, 3, S, S)``."""
        if self.input_format == "NCHW":
            return (self.clip_len, 3, self.crop_size, self.crop_size)
        return (3, self.clip_len, self.crop_size, self.crop_size)
