"""No checkpoint runs code when it is loaded, whatever its name or hash (issue 11).

Official OpenMMLab 1.x files carry mmengine training state (HistoryBuffer objects, numpy values,
optimizer state) next to the weights; those load. A pickle that names anything else is refused,
even when its file name carries a matching sha256 prefix, as a forger's would after ~2^32 tries.
"""

from __future__ import annotations

import argparse
import builtins
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer

from vfx_tasks.errors import UnsafeCheckpointError
from vfx_tasks.models import get_model_spec
from vfx_tasks.models.backbone import load_backbone
from vfx_tasks.models.checkpoint import LoadedHistoryBuffer, load_checkpoint_data, read_backbone_state_dict
from vfx_tasks.models.files import file_sha256
from vfx_tasks.models.standin_checkpoint import standin_state_dict, write_standin_checkpoint

I3D = get_model_spec("i3d")
SMALL_STATE = {"backbone.w": torch.ones(2), "cls_head.fc_cls.bias": torch.zeros(3)}


class _Payload:
    """Pickles as a call of ``function(*args)``, as a malicious checkpoint would."""

    def __init__(self, function: Callable[..., object], *args: object) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return self.function, self.args


@pytest.fixture(scope="module")
def openmmlab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretrained folder whose I3D file carries mmengine training state, like official files."""
    folder = tmp_path_factory.mktemp("openmmlab")
    write_standin_checkpoint(I3D, folder, training_state=True)
    return folder


def forge(folder: Path, checkpoint: object) -> tuple[Path, object]:
    """Save ``checkpoint`` under an official-looking name whose hash suffix matches the file."""
    folder.mkdir(exist_ok=True)
    staging = folder / "staging.pth"
    torch.save(checkpoint, staging)
    official_stem = I3D.checkpoint_filename.rsplit("-", 1)[0]
    forged = staging.rename(folder / f"{official_stem}-{file_sha256(staging)[:8]}.pth")
    spec = dataclasses.replace(I3D, checkpoint_filename=forged.name)
    assert file_sha256(forged).startswith(spec.checkpoint_sha256_prefix or "-")
    return forged, spec


def test_openmmlab_checkpoint_with_training_state_loads(openmmlab_dir: Path) -> None:
    # Given a checkpoint written by mmengine's save_checkpoint with meta, message hub and optimizer
    path = openmmlab_dir / I3D.checkpoint_filename
    data = load_checkpoint_data(path, I3D)
    assert isinstance(data, dict)
    assert {"meta", "message_hub", "optimizer", "param_schedulers", "state_dict"} <= set(data)
    # Then the non-tensor objects come back as what they were
    loss = data["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(loss, LoadedHistoryBuffer)
    np.testing.assert_allclose(loss.data[0], [5.99, 5.2])
    assert data["message_hub"]["runtime_info"]["best_score"] == np.float64(0.25)
    assert "Recognizer3D" in data["meta"]["cfg"]
    assert data["optimizer"]["state"][0]["momentum_buffer"].shape == (2,)
    # And the backbone gets exactly the saved weights
    model = load_backbone(I3D, openmmlab_dir)
    saved = standin_state_dict(I3D)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved["backbone." + key])


def test_loading_leaves_torch_allowlist_as_it_was(openmmlab_dir: Path) -> None:
    # Compared as sets: torch registers some of its own types on first use, in no fixed order.
    before = set(map(repr, torch.serialization.get_safe_globals()))
    load_checkpoint_data(openmmlab_dir / I3D.checkpoint_filename, I3D)
    assert set(map(repr, torch.serialization.get_safe_globals())) == before
    with pytest.raises(Exception, match="HistoryBuffer"):
        torch.load(openmmlab_dir / I3D.checkpoint_filename, weights_only=True)


@pytest.mark.parametrize(
    ("function", "named"),
    [(os.system, f"{os.system.__module__}.system"), (builtins.exec, "builtins.exec")],
    ids=["os.system", "builtins.exec"],
)
def test_forged_file_with_matching_hash_is_refused_and_runs_nothing(
    tmp_path: Path, function: Callable[[str], object], named: str
) -> None:
    # Given a pickle whose payload would create a marker file, named with its own sha256 prefix
    marker = tmp_path / "payload_ran"
    code = f"touch {marker}" if function is os.system else f"open({str(marker)!r}, 'w').close()"
    forged, spec = forge(tmp_path / "p", {"meta": _Payload(function, code), "state_dict": SMALL_STATE})
    # When it is loaded
    with pytest.raises(UnsafeCheckpointError) as info:
        read_backbone_state_dict(forged, spec)
    # Then it is refused with the global named and a way out, and the payload never ran
    message = str(info.value)
    assert str(forged) in message and named in message
    assert "vfx-download-models" in message and "weights_only=False)['state_dict']" in message
    assert not marker.exists()


def test_arbitrary_class_is_refused_even_with_matching_hash(tmp_path: Path) -> None:
    checkpoint = {"meta": {"args": argparse.Namespace(x=1)}, "state_dict": SMALL_STATE}
    forged, spec = forge(tmp_path / "p", checkpoint)
    with pytest.raises(UnsafeCheckpointError, match=r"refers to argparse\.Namespace"):
        read_backbone_state_dict(forged, spec)


def test_a_history_buffer_in_a_file_cannot_change_the_class_table_of_the_process(tmp_path: Path) -> None:
    # Given a file whose HistoryBuffer carries a statistics table that swaps "mean" for "max" and
    # adds an entry (mmengine's __setstate__ copies it into HistoryBuffer._statistics_methods),
    table = HistoryBuffer._statistics_methods
    HistoryBuffer([1.0], [1])  # registers the default entries
    before = dict(table)
    forged_table = {**before, "mean": HistoryBuffer.max, "planted": HistoryBuffer.min}
    HistoryBuffer._statistics_methods = forged_table  # pickled from the class by __getstate__
    try:
        path = tmp_path / "table.pth"
        hub = {"loss": HistoryBuffer([1.0, 3.0], [1, 1])}
        torch.save({"message_hub": hub, "state_dict": SMALL_STATE}, path)
    finally:
        HistoryBuffer._statistics_methods = table
    # when it is loaded,
    data = load_checkpoint_data(path, I3D)
    # then its buffer comes back as data only, and every HistoryBuffer of the process still
    # computes its statistics as before.
    assert isinstance(data, dict)
    loaded = data["message_hub"]["loss"]
    assert isinstance(loaded, LoadedHistoryBuffer) and "statistics_methods" not in vars(loaded)
    np.testing.assert_array_equal(loaded.data[0], [1.0, 3.0])
    assert HistoryBuffer._statistics_methods == before
    assert HistoryBuffer([1.0, 3.0], [1, 1]).statistics("mean") == 2.0


def test_getattr_is_allowed_only_for_history_buffer_methods(tmp_path: Path) -> None:
    # mmengine files need getattr(HistoryBuffer, "mean"); nothing else may go through it
    path = tmp_path / "getattr.pth"
    torch.save({"meta": _Payload(getattr, np.ndarray, "tofile"), "state_dict": SMALL_STATE}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"refers to getattr\(<class 'numpy.ndarray'>, 'tofile'"):
        read_backbone_state_dict(path, I3D)


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "objects.pth"
    torch.save({"meta": np.array([{"a": 1}], dtype=object), "state_dict": SMALL_STATE}, path)
    with pytest.raises(UnsafeCheckpointError, match="refers to numpy dtype object"):
        read_backbone_state_dict(path, I3D)


def test_numpy_1_names_of_official_files_load(tmp_path: Path) -> None:
    # Given a legacy-format file in which numpy is named as numpy 1.x (2022 official files) names it
    path = tmp_path / "numpy1.pth"
    hub = {"log_scalars": {"loss": HistoryBuffer([1.0, 2.0], [1, 1])}, "score": np.float64(0.5)}
    torch.save({"message_hub": hub, "state_dict": SMALL_STATE}, path, _use_new_zipfile_serialization=False)
    content = path.read_bytes()
    assert b"numpy._core.multiarray\n" in content
    path.write_bytes(content.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    # Then it loads
    data = load_checkpoint_data(path, I3D)
    assert isinstance(data, dict) and data["message_hub"]["score"] == 0.5
    np.testing.assert_array_equal(data["message_hub"]["log_scalars"]["loss"].data[0], [1.0, 2.0])


def test_tensors_only_state_dict_loads(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    saved = standin_state_dict(I3D)
    torch.save(saved, folder / I3D.checkpoint_filename)
    model = load_backbone(I3D, folder)
    key = "conv1.conv.weight"
    torch.testing.assert_close(model.state_dict()[key], saved["backbone." + key])
