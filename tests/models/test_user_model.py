"""A user's own config and weights, pinned by sha256: found without running them, refused once changed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.models.test_download import CheckpointServer
from vfx_tasks.errors import (
    CheckpointMismatchError,
    ChecksumMismatchError,
    ConfigurationError,
    ModelFilesChangedError,
)
from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.models import get_model_spec
from vfx_tasks.models.backbone import load_backbone
from vfx_tasks.models.standin_checkpoint import write_standin_checkpoint
from vfx_tasks.models.user_model import (
    config_sources,
    config_sources_sha256,
    fetch_pinned_checkpoint,
    model_folders,
    pin_user_model,
    pinned_model_spec,
)
from vfx_tasks.models.zoo import configs_root

X3D_CONFIG = configs_root() / "configs" / "recognition" / "x3d" / "x3d_s_13x6x1_facebook-kinetics400-rgb.py"


def write_user_config(folder: Path, *, body: str = "", base: str | None = None) -> Path:
    """``folder/my_x3d.py``: X3D-S (through a base file beside it, or ``base``) with ``body`` appended."""
    folder.mkdir(parents=True, exist_ok=True)
    if base is None:
        (folder / "base_x3d.py").write_text(f"_base_ = ['{X3D_CONFIG}']\n")
        base = "base_x3d.py"
    config = folder / "my_x3d.py"
    config.write_text(f"_base_ = [{base!r}]\n{body}")
    return config


@pytest.fixture(scope="module")
def x3d_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """X3D-S stand-in weights, which also fit a user's config that only inherits X3D-S's."""
    folder = tmp_path_factory.mktemp("x3d-weights")
    return write_standin_checkpoint(get_model_spec("x3d-s"), folder)


def test_a_config_and_its_bases_are_found_without_running_them(tmp_path: Path) -> None:
    # Given a user's config whose base sits beside it and pulls in the wheel's X3D-S (and its bases),
    config = write_user_config(tmp_path, body="model = dict(backbone=dict(gamma_d=1.0))\n")
    seen: list[Path] = []
    # when its files are listed, each is shown to the check before it is read, in mmengine's order,
    sources = config_sources(config, check=seen.append)
    assert [path for path, _ in sources] == seen
    assert seen[:3] == [config.resolve(), (tmp_path / "base_x3d.py").resolve(), X3D_CONFIG.resolve()]
    assert all(path.suffix == ".py" for path in seen) and len(seen) > 3  # the wheel's own bases too
    # and the hash covers every one of them: an edit of the base beside it changes it.
    before = config_sources_sha256(config)
    (tmp_path / "base_x3d.py").write_text(f"_base_ = ['{X3D_CONFIG}']\nx = 1\n")
    assert config_sources_sha256(config) != before
    assert model_folders(config, "https://example.org/w.pth")[0] == tmp_path.resolve()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("_base_ = __import__('pathlib').Path('{marker}').write_text('ran')\n", "_base_ must be a string"),
        ("from mmengine.config import read_base\nwith read_base():\n    from .b import *\n", "new-style"),
        ("import mmaction.models\n_base_ = ['{folder}/weights.pth']\n", "imports modules"),
        ("_base_ = ['{folder}/missing.py']\n", "Cannot open model config .*missing.py"),
        ("_base_ = ['{folder}/weights.pth']\n", "not a .py file"),
        ("_base_ = ['{folder}/fifo.py']\n", "not a regular file"),
        ("_base_ = [\n", "not valid Python"),
    ],
    ids=["computed-base", "lazy-import", "import", "missing-base", "not-python", "fifo", "syntax"],
)
def test_what_cannot_be_followed_without_running_it_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    os.mkfifo(tmp_path / "fifo.py")  # opened without waiting for a writer
    (tmp_path / "weights.pth").write_bytes(b"\0" * 16)
    marker = tmp_path / "ran"
    config = tmp_path / "evil.py"
    config.write_text(text.format(marker=marker, folder=tmp_path))
    with pytest.raises(ConfigurationError, match=message):
        config_sources_sha256(config)
    assert not marker.exists()  # nothing of the config ran


def test_a_pinned_config_that_changed_is_refused_before_it_runs(tmp_path: Path, x3d_weights: Path) -> None:
    # Given a config pinned with its weights,
    config = write_user_config(tmp_path)
    pinned = pin_user_model(config, str(x3d_weights), pretrained_dir=tmp_path / "pretrained")
    assert pinned.checkpoint_sha256 == hashlib.sha256(x3d_weights.read_bytes()).hexdigest()
    spec = pinned_model_spec(pinned.config, config_sha256=pinned.config_sha256, checkpoint=pinned.checkpoint,
                             checkpoint_sha256=pinned.checkpoint_sha256)
    assert (spec.name, spec.checkpoint_file, spec.checkpoint_sha256) == (
        "my_x3d", str(x3d_weights), pinned.checkpoint_sha256)
    # when its base file is replaced by code that would leave a marker if it ran,
    marker = tmp_path / "ran"
    (tmp_path / "base_x3d.py").write_text(f"import pathlib\npathlib.Path('{marker}').write_text('x')\n")
    # then reading it again for the same pin is refused, and nothing of it ran.
    with pytest.raises(ModelFilesChangedError, match="my_x3d.py .*changed since"):
        pinned_model_spec(pinned.config, config_sha256=pinned.config_sha256, checkpoint=pinned.checkpoint,
                          checkpoint_sha256="0" * 64)
    assert not marker.exists()


def test_pinned_weights_that_changed_are_refused_before_they_are_read(
    tmp_path: Path, x3d_weights: Path
) -> None:
    config = write_user_config(tmp_path)
    pinned = pin_user_model(config, str(x3d_weights), pretrained_dir=tmp_path)
    other = dict(pinned.__dict__, checkpoint_sha256="f" * 64)
    spec = pinned_model_spec(other["config"], config_sha256=other["config_sha256"],
                             checkpoint=other["checkpoint"], checkpoint_sha256=other["checkpoint_sha256"])
    with pytest.raises(ModelFilesChangedError, match=f"Checkpoint {x3d_weights} has sha256 .*changed since"):
        load_backbone(spec, tmp_path)


def test_weights_that_do_not_fit_the_config_stop_the_pin(tmp_path: Path, x3d_weights: Path) -> None:
    config = write_user_config(tmp_path, body="model = dict(backbone=dict(gamma_w=2))\n")  # wider layers
    with pytest.raises(CheckpointMismatchError, match=r"config my_x3d.py\).*wrong shape: backbone\."):
        pin_user_model(config, str(x3d_weights), pretrained_dir=tmp_path)


def test_weights_from_a_url_are_fetched_and_pinned_then_verified_whole(
    tmp_path: Path, x3d_weights: Path
) -> None:
    # Given a user's weights served over HTTP under a name without a hash,
    config = write_user_config(tmp_path / "config")
    body = x3d_weights.read_bytes()
    with CheckpointServer() as server:
        server.serve("my_x3d.pth", body)
        url = f"{server.base_url}/my_x3d.pth"
        # when the producer pins the run, it fetches them and records their whole sha256,
        recipe = Recipe(model_config=str(config), checkpoint=url).pinned(pretrained_dir=tmp_path / "producer")
        assert recipe.checkpoint == url and recipe.checkpoint_sha256 == hashlib.sha256(body).hexdigest()
        # and a worker fetches the same file into its own folder, once,
        worker_dir = tmp_path / "worker"
        spec = recipe.model_spec()
        fetch_pinned_checkpoint(spec, worker_dir)
        fetch_pinned_checkpoint(spec, worker_dir)
        assert (worker_dir / "my_x3d.pth").read_bytes() == body
        assert len(server.range_requests("my_x3d.pth")) == 2  # the producer's and one worker's
        # but when the server serves another file under that URL, the worker refuses and deletes it.
        server.serve("my_x3d.pth", body[:-1] + b"\1")
        (worker_dir / "my_x3d.pth").unlink()
        with pytest.raises(ChecksumMismatchError, match="but the run pinned"):
            fetch_pinned_checkpoint(spec, worker_dir)
        assert not (worker_dir / "my_x3d.pth").exists()


def test_a_recipe_with_its_own_config_is_named_after_it_and_checked(tmp_path: Path) -> None:
    recipe = Recipe(model_config="/cfg/my_tsm.py", checkpoint="/w/e.pth")
    assert recipe.model == "my_tsm" and recipe.model_config_sha256 == ""
    with pytest.raises(ConfigurationError, match="not pinned"):
        recipe.model_spec()
    with pytest.raises(ConfigurationError, match="needs its weights"):
        Recipe(model_config="/cfg/my_tsm.py")
    with pytest.raises(ConfigurationError, match="belong to a model_config"):
        Recipe(model="x3d", checkpoint="/w/e.pth")
    with pytest.raises(ConfigurationError, match="not a sha256"):
        Recipe(model_config="/cfg/my_tsm.py", checkpoint="/w/e.pth", checkpoint_sha256="abc")
