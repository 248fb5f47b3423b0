"""Crop types and where their crops sit in a frame (no tensors: importable without torch)."""

from __future__ import annotations

from typing import Literal, get_args

from vfx_tasks.errors import ConfigurationError

CropType = Literal["center", "5-crop", "10-crop"]
#: How the centre crop's offset is rounded: ``half_even`` as torchvision (the original tool),
#: ``floor`` as mmaction2's ``CenterCrop``.
CentreRounding = Literal["half_even", "floor"]
CROP_TYPES: tuple[str, ...] = get_args(CropType)
_NUM_CROPS: dict[str, int] = {"center": 1, "5-crop": 5, "10-crop": 10}
_FIVE_CROP_NAMES = ("top_left", "top_right", "bottom_left", "bottom_right", "center")


def validate_crop_type(crop_type: str) -> CropType:
    if crop_type not in _NUM_CROPS:
        raise ConfigurationError(
            f"Invalid crop type ({crop_type!r}). Supported values are {', '.join(CROP_TYPES)}."
        )
    return crop_type  # type: ignore[return-value]


def num_crops(crop_type: CropType) -> int:
    """Number of views a crop type produces per frame (1, 5 or 10)."""
    return _NUM_CROPS[validate_crop_type(crop_type)]


def crop_names(crop_type: CropType) -> tuple[str, ...]:
    """Names of the crops in the order :func:`crop_boxes` (and every feature file) holds them.

    torchvision's ``five_crop`` / ``ten_crop`` order; the mirrored five of ``10-crop`` are
    ``flipped_<name>``. Recorded in each output folder's manifest, read back by ``vfx-export``.
    """
    if validate_crop_type(crop_type) == "center":
        return ("center",)
    if crop_type == "5-crop":
        return _FIVE_CROP_NAMES
    return _FIVE_CROP_NAMES + tuple(f"flipped_{name}" for name in _FIVE_CROP_NAMES)


def crop_boxes(
    height: int,
    width: int,
    crop_size: int,
    crop_type: CropType,
    *,
    centre_rounding: CentreRounding = "half_even",
) -> list[tuple[int, int]]:
    """Top-left corners ``(top, left)`` of the crops, in torchvision's order.

    ``center``: the centre crop. ``5-crop``: top-left, top-right, bottom-left, bottom-right,
    centre. ``10-crop`` uses the ``5-crop`` boxes on the frame and on its mirror image.
    """
    validate_crop_type(crop_type)
    if crop_size > height or crop_size > width:
        raise ConfigurationError(f"Crop {crop_size} does not fit frames of {height}x{width}.")
    if centre_rounding == "floor":  # mmaction2's CenterCrop: (size - crop) // 2
        center = ((height - crop_size) // 2, (width - crop_size) // 2)
    else:  # torchvision rounds the centre offset with Python's round() (half to even)
        center = (int(round((height - crop_size) / 2.0)), int(round((width - crop_size) / 2.0)))
    if crop_type == "center":
        return [center]
    bottom, right = height - crop_size, width - crop_size
    return [(0, 0), (0, right), (bottom, 0), (bottom, right), center]
