"""Loading weights strictly, and the errors a wrong or missing checkpoint gives."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
import torch

from vfx_tasks.errors import CheckpointError, CheckpointMismatchError, CheckpointNotFoundError
from vfx_tasks.models import get_model_spec
from vfx_tasks.models.backbone import load_backbone
from vfx_tasks.models.checkpoint import read_backbone_state_dict

I3D = get_model_spec("i3d")
SWIN = get_model_spec("swin-t")


@pytest.fixture(scope="module")
def i3d_checkpoint(pretrained_dir: Path) -> dict:
    return torch.load(pretrained_dir / I3D.checkpoint_filename, map_location="cpu", weights_only=True)


def save_as_i3d(folder: Path, checkpoint: object) -> Path:
    folder.mkdir(exist_ok=True)
    torch.save(checkpoint, folder / I3D.checkpoint_filename)
    return folder


def test_loads_backbone_and_ignores_the_classifier_head(pretrained_dir: Path, i3d_checkpoint: dict) -> None:
    model = load_backbone(I3D, pretrained_dir)
    assert not model.training
    key = "conv1.conv.weight"
    torch.testing.assert_close(model.state_dict()[key], i3d_checkpoint["state_dict"]["backbone." + key])
    assert not any(name.startswith("cls_head") for name in model.state_dict())


def test_missing_checkpoint_names_file_and_download(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError) as info:
        load_backbone(I3D, tmp_path)
    message = str(info.value)
    assert I3D.checkpoint_filename in message and I3D.checkpoint_url in message
    assert "VFX_PRETRAINED_DIR" in message


def test_missing_backbone_tensors_are_listed(tmp_path: Path, i3d_checkpoint: dict) -> None:
    state = dict(i3d_checkpoint["state_dict"])
    del state["backbone.layer4.2.conv3.conv.weight"]
    folder = save_as_i3d(tmp_path / "p", {"state_dict": state})
    with pytest.raises(CheckpointMismatchError, match=r"1 missing: layer4\.2\.conv3\.conv\.weight"):
        load_backbone(I3D, folder)


def test_wrong_shape_is_listed(tmp_path: Path, i3d_checkpoint: dict) -> None:
    state = dict(i3d_checkpoint["state_dict"])
    state["backbone.conv1.conv.weight"] = torch.zeros(64, 3, 1, 7, 7)
    folder = save_as_i3d(tmp_path / "p", {"state_dict": state})
    expected = r"wrong shape: conv1\.conv\.weight: checkpoint \(64, 3, 1, 7, 7\)"
    with pytest.raises(CheckpointMismatchError, match=expected):
        load_backbone(I3D, folder)


def test_other_models_checkpoint_is_refused(tmp_path: Path, pretrained_dir: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copy(pretrained_dir / SWIN.checkpoint_filename, folder / I3D.checkpoint_filename)
    with pytest.raises(CheckpointMismatchError, match="does not fit") as info:
        load_backbone(I3D, folder)
    assert "missing" in str(info.value) and "unexpected" in str(info.value)


def test_checkpoint_without_backbone_is_refused(tmp_path: Path) -> None:
    folder = save_as_i3d(tmp_path / "p", {"state_dict": {"cls_head.fc_cls.bias": torch.zeros(400)}})
    with pytest.raises(CheckpointMismatchError, match="no 'backbone.\\*' tensors"):
        load_backbone(I3D, folder)


def test_garbage_file_is_a_readable_error(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / I3D.checkpoint_filename).write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(CheckpointError, match="damaged or not a PyTorch checkpoint"):
        load_backbone(I3D, folder)


def test_pickle_with_other_objects_is_not_unpickled(tmp_path: Path, i3d_checkpoint: dict) -> None:
    checkpoint = {"meta": {"args": argparse.Namespace(x=1)}, "state_dict": i3d_checkpoint["state_dict"]}
    folder = save_as_i3d(tmp_path / "p", checkpoint)
    with pytest.raises(CheckpointError, match=r"refers to argparse\.Namespace, which a checkpoint may not"):
        read_backbone_state_dict(folder / I3D.checkpoint_filename, I3D)
