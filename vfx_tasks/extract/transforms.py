"""Spatial preprocessing: resize the short side, cut crops, normalise, lay out for the model.

Matches torchvision's ``Resize(256, antialias=True)`` on uint8, ``CenterCrop`` / ``FiveCrop`` /
``TenCrop`` (same crop order and offsets) and ``Normalize`` on the 0-1 scale, as the original
pipeline used them; for the model-zoo models (``preprocessing="mmaction2"``), mmaction2's test
pipeline instead: ``Resize(scale=(-1, S))`` through OpenCV and centre offsets floored. Work is done
once per *decoded frame*, not per clip, and clips are gathered at the end, so frames shared by
clips are processed once.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vfx_tasks.extract.crops import CentreRounding, CropType, crop_boxes
from vfx_tasks.models.spec import InputFormat


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Output ``(height, width)`` of a short-side resize, truncating the long side like
    torchvision's ``Resize(int)``."""
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


def resize_short_side(frames_nchw: torch.Tensor, short_side: int) -> torch.Tensor:
    """Bilinear, antialiased resize of uint8 frames so the short side is ``short_side``.

    Args:
        frames_nchw: ``(N, 3, H, W)`` uint8.

    Returns:
        ``(N, 3, H', W')`` uint8. On the CPU the resize runs natively on uint8 (torch's
        integer kernel, as torchvision does); elsewhere in float32, rounded back to uint8.
    """
    size = resized_size(frames_nchw.shape[-2], frames_nchw.shape[-1], short_side)
    if tuple(frames_nchw.shape[-2:]) == size:
        return frames_nchw
    if frames_nchw.device.type == "cpu":
        return F.interpolate(frames_nchw, size=size, mode="bilinear", antialias=True, align_corners=False)
    resized = F.interpolate(
        frames_nchw.float(), size=size, mode="bilinear", antialias=True, align_corners=False
    )
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def mmcv_resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Output ``(height, width)`` of mmaction2's ``Resize(scale=(-1, short_side))``: both sides
    scaled by ``short_side / min(height, width)`` and rounded half up, as ``mmcv.rescale_size``."""
    factor = short_side / min(height, width)
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_short_side_mmcv(frames_nhwc: np.ndarray, short_side: int) -> np.ndarray:
    """mmaction2's test-time resize of uint8 frames: OpenCV's bilinear ``cv2.resize``, frame by
    frame, as ``mmcv.imresize`` calls it (no antialiasing, OpenCV's fixed-point arithmetic).

    Args:
        frames_nhwc: ``(N, H, W, 3)`` uint8.

    Returns:
        ``(N, H', W', 3)`` uint8.
    """
    import cv2

    height, width = mmcv_resized_size(frames_nhwc.shape[1], frames_nhwc.shape[2], short_side)
    out = np.empty((frames_nhwc.shape[0], height, width, 3), dtype=np.uint8)
    for index, frame in enumerate(frames_nhwc):
        out[index] = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
    return out


def to_model_layout(clips_ncthw: torch.Tensor, input_format: InputFormat) -> torch.Tensor:
    """Lay clip-crops out as the backbone takes them.

    Args:
        clips_ncthw: ``(N, 3, T, H, W)``.

    Returns:
        ``(N, 3, T, H, W)`` itself for ``NCTHW``; ``(N * T, 3, H, W)`` for ``NCHW``, each clip's
        frames one after the other, as mmaction2's ``FormatShape('NCHW')`` gives a 2-D backbone.
    """
    if input_format == "NCTHW":
        return clips_ncthw
    return clips_ncthw.transpose(1, 2).flatten(0, 1)


def crop_views(frames_nchw: torch.Tensor, crop_size: int, crop_type: CropType) -> torch.Tensor:
    """Cut the crops of every frame.

    Args:
        frames_nchw: ``(N, 3, H, W)`` frames, any dtype.

    Returns:
        ``(N, n_crops, 3, crop_size, crop_size)``, crops in torchvision's order.
    """
    height, width = frames_nchw.shape[-2:]
    boxes = crop_boxes(height, width, crop_size, crop_type)
    sources = [frames_nchw]
    if crop_type == "10-crop":
        sources.append(torch.flip(frames_nchw, dims=(-1,)))
    views = [
        source[..., top : top + crop_size, left : left + crop_size]
        for source in sources
        for top, left in boxes
    ]
    return torch.stack(views, dim=1)


def _normalization(
    mean_rgb: tuple[float, ...],
    std_rgb: tuple[float, ...],
    *,
    dims: int,
    channel_dim: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    shape = [1] * dims
    shape[channel_dim] = 3
    mean = torch.tensor(mean_rgb, dtype=torch.float32, device=device).view(shape)
    std = torch.tensor(std_rgb, dtype=torch.float32, device=device).view(shape)
    return mean, std


def normalize_(
    clips_uint8: torch.Tensor, mean_rgb: tuple[float, ...], std_rgb: tuple[float, ...], *, channel_dim: int
) -> torch.Tensor:
    """Scale uint8 pixels to 0-1 and normalise per channel, converting to float32 once and then
    working in place. ``channel_dim`` is the axis of the 3 colour channels."""
    mean, std = _normalization(
        mean_rgb, std_rgb, dims=clips_uint8.dim(), channel_dim=channel_dim, device=clips_uint8.device
    )
    return clips_uint8.float().div_(255.0).sub_(mean).div_(std)


def frames_to_model_input(
    frames_nhwc: torch.Tensor,
    clip_frame_positions: np.ndarray,
    *,
    short_side: int,
    crop_size: int,
    crop_type: CropType,
    mean_rgb: tuple[float, ...],
    std_rgb: tuple[float, ...],
    channels_last: bool = False,
    centre_rounding: CentreRounding = "half_even",
) -> torch.Tensor:
    """Turn the decoded frames of a batch of clips into the backbone's input.

    Args:
        frames_nhwc: ``(N, H, W, 3)`` uint8 RGB, each distinct frame the batch needs, once.
        clip_frame_positions: ``(B, T)`` positions into ``frames_nhwc`` of each clip's frames.
        channels_last: lay each clip out channels-last in memory (``T, h, w, C``), as a backbone on
            ``torch.channels_last_3d`` takes it: no copy transposes the (channels-last) frames.
        centre_rounding: where the centre crop sits (:data:`~vfx_tasks.extract.crops.CentreRounding`).

    Returns:
        ``(B, n_crops, 3, T, crop_size, crop_size)`` float32 on ``frames_nhwc``'s device (with
        ``channels_last``, a view whose ``flatten(0, 1)`` is ``channels_last_3d``).
    """
    frames_nchw = frames_nhwc.permute(0, 3, 1, 2)  # a channels-last view: the fast uint8 path
    resized = resize_short_side(frames_nchw, short_side)
    height, width = resized.shape[-2:]
    sources = [resized]
    if crop_type == "10-crop":
        sources.append(torch.flip(resized, dims=(-1,)))
    boxes = crop_boxes(height, width, crop_size, crop_type, centre_rounding=centre_rounding)
    positions = torch.as_tensor(clip_frame_positions, dtype=torch.long, device=resized.device)
    num_clips, clip_len = positions.shape
    views = len(sources) * len(boxes)
    # Memory order (B, V, T, h, w, C) or (B, V, C, T, h, w); seen as (B, V, C, T, h, w) either way.
    order = (0, 1, 3, 4, 5, 2) if channels_last else (0, 1, 2, 3, 4, 5)
    stored = [(num_clips, views, 3, clip_len, crop_size, crop_size)[axis] for axis in order]
    memory = torch.empty(stored, dtype=torch.float32, device=resized.device)
    clips = memory.permute([order.index(axis) for axis in range(6)])
    # Each crop is gathered straight from the resized frames and converted to float32 as it is
    # laid out: one copy per crop instead of a crop copy, a gather, a layout and a conversion.
    view = 0
    for source in sources:
        for top, left in boxes:
            crop = source[:, :, top : top + crop_size, left : left + crop_size].permute(0, 2, 3, 1)
            gathered = crop[positions]  # (B, T, h, w, C) uint8, in the frames' own channels-last order
            clips[:, view].copy_(gathered.permute(0, 4, 1, 2, 3))  # (B, C, T, h, w)
            view += 1
    if channels_last:
        # Broadcasting 3 values along the innermost axis defeats vectorisation (4x slower on a
        # CPU): normalise whole rows of pixels against the channel values repeated along a row.
        rows = memory.view(-1, crop_size * 3)
        mean, std = (
            torch.tensor(values, dtype=torch.float32, device=memory.device).repeat(crop_size)
            for values in (mean_rgb, std_rgb)
        )
        rows.div_(255.0).sub_(mean).div_(std)
        return clips
    mean, std = _normalization(mean_rgb, std_rgb, dims=clips.dim(), channel_dim=2, device=clips.device)
    return clips.div_(255.0).sub_(mean).div_(std)
