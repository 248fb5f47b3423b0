"""The manifest's crop order is the order the extraction cuts its crops in; a planted one is not read."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch

from vfx_tasks.errors import UnsafeFileError
from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.extract.transforms import crop_views
from vfx_tasks.outputs.manifest import manifest_for, read_manifest


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


def test_a_manifest_planted_as_a_fifo_a_link_or_a_huge_file_is_refused_without_reading_it(
    tmp_path: Path,
) -> None:
    fifo, zero, huge = tmp_path / "fifo", tmp_path / "zero", tmp_path / "huge"
    for folder in (fifo, zero, huge):
        folder.mkdir()
    os.mkfifo(fifo / "vfx-run.json")  # opening it for reading waits for a writer
    (zero / "vfx-run.json").symlink_to("/dev/zero")
    with open(huge / "vfx-run.json", "wb") as f:
        f.truncate(5 << 30)  # sparse: 5 GiB without using the disk
    outcomes: dict[str, str] = {}

    def read_all() -> None:
        for folder in (fifo, zero, huge):
            try:
                read_manifest(folder)
                outcomes[folder.name] = "read"
            except UnsafeFileError as e:
                outcomes[folder.name] = str(e)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(30)
    if reader.is_alive():  # let a reader stuck on the FIFO go before failing
        os.close(os.open(fifo / "vfx-run.json", os.O_WRONLY | os.O_NONBLOCK))
    assert not reader.is_alive() or pytest.fail(f"the reader hangs; so far {outcomes}")
    assert "fifo/vfx-run.json is not a regular file" in outcomes["fifo"]
    assert "zero/vfx-run.json is a symbolic link" in outcomes["zero"]
    assert f"huge/vfx-run.json holds {5 << 30} bytes, more than the 1048576" in outcomes["huge"]


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_two_producers_claiming_one_new_folder_at_once_cannot_both_win(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from vfx_tasks.errors import ManifestMismatchError
    from vfx_tasks.outputs.manifest import claim_output_dir
    from vfx_tasks.storage import open_folder

    if where == "bucket":
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        locations = [f"s3://{bucket}/run{i}" for i in range(8)]
        options = {"endpoint_url": server.endpoint_url}
    else:
        locations, options = [str(tmp_path / f"run{i}") for i in range(8)], None
    manifests = [manifest_for(Recipe(model="i3d", crop_type=crop), pretrained_dir=None)
                 for crop in ("center", "5-crop")]
    for location in locations:
        # Given two producers with other settings claiming the same new folder at the same moment,
        outcomes: list[str] = []
        barrier = threading.Barrier(2)

        def claim(
            manifest: object, location: str = location, outcomes: list[str] = outcomes,
            barrier: threading.Barrier = barrier,
        ) -> None:
            with open_folder(location, create=True, storage_options=options) as folder:
                barrier.wait()
                try:
                    outcomes.append(claim_output_dir(folder, manifest))  # type: ignore[arg-type]
                except ManifestMismatchError:
                    outcomes.append("refused")

        threads = [threading.Thread(target=claim, args=(manifest,)) for manifest in manifests]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        # then one creates the manifest, and the other is refused instead of writing over it.
        assert sorted(outcomes) == ["created", "refused"], (location, outcomes)
