"""A task naming its own model config: refused unless every file mmengine would run is trusted and
pinned, before any of it runs (``queue/worker/model_files.py``, called by ``process_video``)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.models.test_user_model import X3D_CONFIG
from vfx_tasks.errors import ModelFilesChangedError, UntrustedMessageError
from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.models.user_model import config_sources_sha256
from vfx_tasks.queue.job import Job, Run
from vfx_tasks.queue.worker.model_files import check_model_files
from vfx_tasks.queue.worker.process import process_video
from vfx_tasks.settings import Settings

#: The checkpoint's sha256 in the crafted messages (the check refuses before any checkpoint is read).
SOME_SHA256 = "ab" * 32


def write_evil_config(path: Path, marker: Path, *, base: Path | None = None) -> Path:
    """A config that leaves ``marker`` behind if mmengine ever runs it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bases = f"_base_ = ['{base}']\n" if base else ""
    path.write_text(f"{bases}import pathlib\npathlib.Path('{marker}').write_text('ran')\n")
    return path


def crafted_job(tmp_path: Path, config: Path, **overrides: Any) -> Job:
    """The job of a message anyone who reaches Redis could send: paths in the worker's roots, the
    config's true sha256 (anyone can hash a file they wrote), the run id its settings give."""
    kwargs: dict[str, Any] = {
        "video_path": str(tmp_path / "in" / "v.mp4"), "output_dir": str(tmp_path / "out"),
        "relative_id": "v", "model": "evil", "crop_type": "center",
        "num_clips_per_video": 1, "clip_sampling": "sequential", "precision": "fp32",
        "model_config": str(config), "model_config_sha256": config_sources_sha256(config),
        "checkpoint": str(config.parent / "w.pth"), "checkpoint_sha256": SOME_SHA256,
    }  # fmt: skip
    kwargs.update(overrides)
    kwargs["run_id"] = Run(kwargs["output_dir"], Recipe.from_mapping(kwargs)).run_id
    return Job.from_message(kwargs)


def worker_settings(tmp_path: Path, model_roots: tuple[Path, ...] = ()) -> Settings:
    return Settings.from_env(
        {}, device="cpu", input_roots=(tmp_path / "in",), output_roots=(tmp_path / "out",),
        model_roots=model_roots,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("unset", "model_config .*evil.py is not under VFX_MODEL_ROOTS, which is not set on this worker"),
        ("elsewhere", r"model_config .*evil.py is not under VFX_MODEL_ROOTS \(.*/configs\)"),
        ("base-outside", r"model_config .*outside/base.py is not under VFX_MODEL_ROOTS"),
        ("checkpoint-outside", r"checkpoint .*/elsewhere/w.pth is not under VFX_MODEL_ROOTS"),
        ("no-sha256", "must carry model_config_sha256 and checkpoint_sha256"),
    ],
)
def test_a_config_the_worker_does_not_trust_is_refused_before_it_runs(
    tmp_path: Path, where: str, message: str
) -> None:
    # Given a worker whose trusted configs are under configs/ (or that has none),
    marker = tmp_path / "ran"
    roots = () if where == "unset" else (tmp_path / "configs",)
    config_folder = tmp_path / ("elsewhere" if where in ("unset", "elsewhere") else "configs")
    base = write_evil_config(tmp_path / "outside" / "base.py", marker) if where == "base-outside" else None
    config = write_evil_config(config_folder / "evil.py", marker, base=base)
    overrides: dict[str, Any] = {}
    if where == "checkpoint-outside":
        overrides["checkpoint"] = str(tmp_path / "elsewhere" / "w.pth")
    if where == "no-sha256":
        overrides["model_config_sha256"] = ""
    job = crafted_job(tmp_path, config, **overrides)
    # when a message names a config (or a base file, or weights) outside them,
    with pytest.raises(UntrustedMessageError, match=message):
        process_video(job, settings=worker_settings(tmp_path, roots), worker_name="me@box")
    # then it is refused, and nothing of the config ran.
    assert not marker.exists()


def test_a_config_that_changed_since_it_was_queued_is_refused_before_it_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    config = write_evil_config(tmp_path / "configs" / "evil.py", marker)
    job = crafted_job(tmp_path, config, model_config_sha256=hashlib.sha256(b"what was queued").hexdigest())
    with pytest.raises(ModelFilesChangedError, match="evil.py .*changed since the run was queued"):
        process_video(job, settings=worker_settings(tmp_path, (tmp_path / "configs",)), worker_name="me@box")
    assert not marker.exists()


def test_a_trusted_pinned_config_on_mmaction2s_own_bases_passes(tmp_path: Path) -> None:
    config = tmp_path / "configs" / "my_x3d.py"
    config.parent.mkdir()
    config.write_text(f"_base_ = ['{X3D_CONFIG}']\n")
    recipe = Recipe(model_config=str(config), checkpoint=str(tmp_path / "configs" / "w.pth"),
                    model_config_sha256=config_sources_sha256(config), checkpoint_sha256=SOME_SHA256)
    check_model_files(recipe, settings=worker_settings(tmp_path, (tmp_path / "configs",)))
    # A URL's weights are fetched into the worker's own pretrained folder.
    url = recipe.with_changes(checkpoint="https://example.org/w/my_x3d.pth")
    check_model_files(url, settings=worker_settings(tmp_path, (tmp_path / "configs",)))
    # A run of a named model has nothing to check, and none of these fields changes its run id.
    assert Run("/out", Recipe(model="x3d")).run_id == Run("/out", Recipe(model="x3d", model_config="")).run_id
