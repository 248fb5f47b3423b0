"""The manifest's crop order is the order the extraction cuts its crops in."""

from __future__ import annotations

import pytest
import torch

from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.extract.transforms import crop_views
from vfx_tasks.outputs.manifest import manifest_for


@pytest.mark.parametrize("crop_type", ["center", "5-crop", "10-crop"])
def test_crop_order_names_where_each_crop_of_the_extraction_sits(crop_type: str) -> None:
    # Given a frame whose every pixel is distinct,
    height, width, size = 256, 340, 224
    frame = torch.arange(3 * height * width, dtype=torch.float64).reshape(1, 3, height, width)
    mirrored = torch.flip(frame, dims=(-1,))
    corners = {
        "top_left": (0, 0), "top_right": (0, width - size), "bottom_left": (height - size, 0),
        "bottom_right": (height - size, width - size),
        "center": (round((height - size) / 2), round((width - size) / 2)),
    }
    # when the extraction cuts its crops,
    views = crop_views(frame, size, crop_type)[0]  # type: ignore[arg-type]
    manifest = manifest_for(Recipe(model="i3d", crop_type=crop_type), pretrained_dir=None)
    order = manifest.settings.facts.crop_order
    # then crop k is the region the manifest's k-th name says (torchvision's five_crop/ten_crop order).
    assert len(order) == views.shape[0]
    for k, name in enumerate(order):
        source = mirrored if name.startswith("flipped_") else frame
        top, left = corners[name.removeprefix("flipped_")]
        assert torch.equal(views[k], source[0, :, top : top + size, left : left + size]), name
