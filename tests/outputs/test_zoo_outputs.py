"""Manifests and index rows of model-zoo models: the config recorded, clip starts from each sampler."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from vfx_tasks.cli.export import main as export_main
from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.extract.sampling import clip_frame_indices
from vfx_tasks.models import get_model_spec
from vfx_tasks.outputs.index import append_row, make_row, read_index, rebuild_index
from vfx_tasks.outputs.manifest import Manifest, manifest_for, read_manifest, write_manifest

#: The keys of a default model's manifest settings before model-zoo models existed.
SEED_KEYS = {
    "model", "crop_type", "num_clips_per_video", "clip_sampling", "precision", "decoder", "checkpoint_file",
    "checkpoint_sha256", "crop_order", "clip_len", "sampling_rate", "clip_span_frames", "resize_short_side",
    "crop_size", "mean_rgb", "std_rgb", "feature_dim",
}


@pytest.mark.parametrize("model", ["i3d", "swin-t"])
def test_the_default_models_manifests_are_unchanged(model: str) -> None:
    manifest = manifest_for(Recipe(model=model), pretrained_dir=None)
    written = json.loads(json.dumps(manifest.to_json()))
    assert set(written["settings"]) == SEED_KEYS
    assert Manifest.from_json(written) == manifest


@pytest.mark.parametrize(
    ("model", "sampler", "span"),
    [("tsm", "segments", 0), ("uniformerv2-b", "uniform_sample", 0), ("slowonly", "sample_frames", 64),
     ("x3d-s", "sample_frames", 78)],
)
def test_a_zoo_models_manifest_records_its_config_and_sampler(model: str, sampler: str, span: int) -> None:
    spec = get_model_spec(model)
    written = manifest_for(Recipe(model=model), pretrained_dir=None).to_json()["settings"]
    assert written["config_name"] == spec.config_name and written["config_name"].startswith(
        f"configs/recognition/{spec.family}/")
    assert written["config_sha256"] == spec.config_sha256 and len(written["config_sha256"]) == 64
    assert (written["sampler"], written["clip_span_frames"]) == (sampler, span)
    assert written.get("target_fps") == spec.target_fps
    read_back = Manifest.from_json({"schema": 1, "settings": json.loads(json.dumps(written))})
    assert read_back.settings.to_json() == written


@pytest.mark.parametrize("model", ["tsm", "uniformerv2-b", "slowonly", "x3d-s", "i3d"])
@pytest.mark.parametrize(("clips", "clip_sampling"), [(-1, "sequential"), (3, "sequential"), (3, "uniform")])
@pytest.mark.parametrize(("frames", "fps"), [(300, 25.0), (301, 59.94), (7, 30.0)])
def test_index_clip_starts_are_the_models_own_samplers(
    model: str, clips: int, clip_sampling: str, frames: int, fps: float
) -> None:
    # Given the facts a manifest records of a model (no model code needed to read them),
    spec = get_model_spec(model)
    facts = manifest_for(Recipe(model=model), pretrained_dir=None).settings.facts
    expected = clip_frame_indices(spec, frames, fps=fps, num_clips_per_video=clips,
                                  clip_sampling=clip_sampling)
    # when a video's row is made from them,
    row = make_row("v", shape=(len(expected), 1, spec.feature_dim), frames=frames, fps=fps,
                   sampler=facts.frame_sampler(), num_clips_per_video=clips, clip_sampling=clip_sampling,
                   labels=None)
    # then its clip starts are the first frames the extraction took for each clip.
    assert row.clip_start_frames == tuple(int(i) for i in expected[:, 0])
    if spec.sampler in ("segments", "uniform_sample"):
        assert row.clip_span_frames == 0
    elif spec.target_fps:
        assert row.clip_span_frames == round(spec.clip_len * spec.sampling_rate * fps / spec.target_fps)
    else:
        assert row.clip_span_frames == spec.clip_len * spec.sampling_rate


def write_tsm_folder(root: Path, videos: dict[str, int]) -> Manifest:
    """A TSM output folder with one whole-video feature per video (``relative_id -> frames``)."""
    manifest = manifest_for(Recipe(model="tsm", crop_type="center"), pretrained_dir=None)
    write_manifest(root, manifest)
    facts = manifest.settings.facts
    for relative_id, frames in videos.items():
        np.save(root / f"{relative_id}.npy", np.ones((1, 1, 2048), np.float32))
        append_row(root, make_row(relative_id, shape=(1, 1, 2048), frames=frames, fps=25.0,
                                  sampler=facts.frame_sampler(), num_clips_per_video=-1,
                                  clip_sampling="sequential", labels=None))
    return manifest


def test_a_segment_models_index_is_rebuilt_and_exported_with_its_frames(tmp_path: Path) -> None:
    # Given a TSM folder: one feature per video, whatever its length,
    manifest = write_tsm_folder(tmp_path / "tsm", {"long": 900, "short": 40})
    facts = manifest.settings.facts
    # when its index is rebuilt from the files, the frame counts still fit the clips,
    rows = rebuild_index(tmp_path / "tsm", summaries={}, sampler=facts.frame_sampler(),
                         num_clips_per_video=-1, clip_sampling="sequential", feature_shape=(1, 2048))
    assert {row.relative_id: (row.frames, row.clip_start_frames) for row in rows} == {
        "long": (900, (56,)), "short": (40, (2,))}  # the middle of the first of 8 segments
    assert read_manifest(tmp_path / "tsm") == manifest
    # and an HDF5 export carries them too.
    dest = tmp_path / "tsm.h5"
    args = [str(tmp_path / "tsm"), str(dest), "--format", "hdf5", "--layout", "video"]
    result = CliRunner().invoke(export_main, args)
    assert result.exit_code == 0, result.output
    with h5py.File(dest, "r") as f:
        assert (f["long"].attrs["frames"], f["long"].attrs["clip_span_frames"]) == (900, 0)
        assert list(f["long"].attrs["clip_start_frames"]) == [56]
    assert read_index(tmp_path / "tsm")["short"].clip_start_frames == (2,)
