"""Resize, crops and normalisation, against torchvision's definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vfx_tasks.errors import ConfigurationError
from vfx_tasks.extract.crops import crop_boxes
from vfx_tasks.extract.transforms import crop_views, frames_to_model_input, resized_size
from vfx_tasks.models.spec import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [(720, 1280, (256, 455)), (144, 176, (256, 312)), (1280, 720, (455, 256)), (256, 256, (256, 256))],
)
def test_short_side_resize_truncates_the_long_side(
    height: int, width: int, expected: tuple[int, int]
) -> None:
    assert resized_size(height, width, 256) == expected


def test_five_crop_boxes_follow_torchvision_order_and_rounding() -> None:
    # (455 - 224) / 2 = 115.5: torchvision's round() goes to the even neighbour, 116.
    assert crop_boxes(256, 455, 224, "5-crop") == [(0, 0), (0, 231), (32, 0), (32, 231), (16, 116)]
    assert crop_boxes(256, 455, 224, "center") == [(16, 116)]


def test_ten_crop_is_five_crop_then_five_crop_of_the_mirror_image() -> None:
    frames = torch.arange(2 * 3 * 6 * 8, dtype=torch.uint8).view(2, 3, 6, 8)
    views = crop_views(frames, 4, "10-crop")
    assert views.shape == (2, 10, 3, 4, 4)
    torch.testing.assert_close(views[:, 5:], crop_views(torch.flip(frames, dims=(-1,)), 4, "5-crop"))
    torch.testing.assert_close(views[:, 0], frames[..., :4, :4])


def test_crop_larger_than_frame_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="does not fit"):
        crop_boxes(200, 300, 224, "center")


def test_unknown_crop_type_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="center, 5-crop, 10-crop"):
        crop_boxes(256, 256, 224, "3-crop")  # type: ignore[arg-type]


def test_model_input_layout_and_normalisation() -> None:
    # Given three uniform grey frames already at 256 x 256, and two clips indexing them
    frames = torch.stack([torch.full((256, 256, 3), v, dtype=torch.uint8) for v in (0, 128, 255)])
    positions = np.array([[0, 1], [2, 2]])
    # When they become model input
    out = frames_to_model_input(
        frames, positions, short_side=256, crop_size=224, crop_type="5-crop",
        mean_rgb=IMAGENET_MEAN_RGB, std_rgb=IMAGENET_STD_RGB,
    )
    # Then the layout is (B, n_crops, C, T, H, W) and pixel values are ImageNet-normalised
    assert out.shape == (2, 5, 3, 2, 224, 224) and out.dtype == torch.float32
    expected_red = [(v / 255 - IMAGENET_MEAN_RGB[0]) / IMAGENET_STD_RGB[0] for v in (0, 128)]
    torch.testing.assert_close(out[0, 3, 0, :, 100, 100], torch.tensor(expected_red))
    assert torch.all(out[1, :, 2] == (1 - IMAGENET_MEAN_RGB[2]) / IMAGENET_STD_RGB[2])


@pytest.mark.parametrize("crop_type", ["center", "5-crop", "10-crop"])
def test_channels_last_input_holds_the_same_numbers_in_the_backbones_memory_order(crop_type: str) -> None:
    # Distinct values per pixel, channel and frame: any mix-up of axes shows.
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (6, 240, 320, 3), dtype=torch.uint8, generator=generator)
    positions = np.array([[0, 2, 4], [1, 3, 5]])
    options = {"short_side": 256, "crop_size": 224, "crop_type": crop_type,
               "mean_rgb": IMAGENET_MEAN_RGB, "std_rgb": IMAGENET_STD_RGB}
    plain = frames_to_model_input(frames, positions, **options)  # type: ignore[arg-type]
    last = frames_to_model_input(frames, positions, channels_last=True, **options)  # type: ignore[arg-type]
    assert torch.equal(plain, last)
    # What the backbone receives needs no copy to be channels-last 3-D.
    flat = last.flatten(0, 1)
    assert flat.is_contiguous(memory_format=torch.channels_last_3d)
    assert flat.contiguous(memory_format=torch.channels_last_3d).data_ptr() == flat.data_ptr()
