"""The typed description of a supported backbone: everything the pipeline needs to know."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: ImageNet statistics on the 0-1 scale, shared by both published pipelines.
IMAGENET_MEAN_RGB: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """One backbone and the preprocessing it was trained with.

    Attributes:
        name: The full mmaction2 model-zoo name, as the original tool used it.
        aliases: Short names accepted wherever a model name is.
        backbone_config: mmaction2 registry config of the backbone (``type`` plus arguments),
            identical to what the model-zoo config resolves to, with ``pretrained`` disabled.
        feature_dim: Size ``D`` of one clip feature after average pooling.
        clip_len: Frames per clip.
        sampling_rate: Stride between the sampled frames of a clip.
        resize_short_side: Short side of the frames after resizing, in pixels.
        crop_size: Side of the square crops fed to the backbone, in pixels.
        mean_rgb, std_rgb: Normalisation on the 0-1 scale, RGB order.
        checkpoint_filename: File name of the Kinetics-400 checkpoint in the pretrained directory.
        checkpoint_url: Where the official checkpoint is downloaded from.
        channels_last_3d: Run the backbone on channels-last 3-D tensors (NTHWC in memory), which
            suits convolution kernels: on the CPU I3D ran 1.27x faster, Swin 0.94x (so it stays
            off there); see benchmarks/memory_format.py.
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

    @property
    def clip_span_frames(self) -> int:
        """Frames a clip covers from its first sample to the next clip's start (32 x 2 = 64)."""
        return self.clip_len * self.sampling_rate

    @property
    def checkpoint_sha256_prefix(self) -> str | None:
        """The leading sha256 hex digits that OpenMMLab puts at the end of its file names."""
        stem = self.checkpoint_filename.rsplit(".", 1)[0]
        tail = stem.rsplit("-", 1)[-1]
        if len(tail) == 8 and all(c in "0123456789abcdef" for c in tail):
            return tail
        return None
