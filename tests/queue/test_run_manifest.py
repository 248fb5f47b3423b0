"""vfx-run.json and index.csv with real workers: a run with other settings cannot take a folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import WorkerProcess, run_cli, run_spec, wait_until, write_test_video
from tests.helpers import ENQUEUE, RUN_SPEC_OPTIONS
from vfx_tasks.cli import status
from vfx_tasks.outputs.index import read_index
from vfx_tasks.outputs.manifest import read_manifest
from vfx_tasks.queue.app import EXTRACT_VIDEO_TASK, create_app
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.producer.enqueue import job_of
from vfx_tasks.settings import Settings
from vfx_tasks.sources.base import VideoItem

pytestmark = pytest.mark.slow


def test_other_settings_are_refused_forced_or_failed_and_the_index_matches(
    tmp_path: Path, queue_env: dict[str, str], redis_url: str, start_worker: type[WorkerProcess]
) -> None:
    # Given two tiny videos extracted into a folder by a real worker,
    videos, out = tmp_path / "videos", tmp_path / "out"
    write_test_video(videos / "a.mp4", width=64, height=48, num_frames=40)
    write_test_video(videos / "sub" / "b.mp4", width=64, height=48, num_frames=70, fps=30.0)
    start_worker()
    args = ["--input_dir", str(videos), "--output_dir", str(out), *RUN_SPEC_OPTIONS]
    first = run_cli(ENQUEUE, *args, "--wait", env=queue_env)
    assert first.returncode == 0, first.stderr
    # then the folder records its settings, with the checkpoint's hash and the crop order,
    manifest = read_manifest(out)
    assert manifest is not None
    recipe, facts = manifest.settings.recipe, manifest.settings.facts
    assert (recipe.precision, facts.crop_order) == ("fp32", ("center",))
    assert facts.checkpoint_sha256 and len(facts.checkpoint_sha256) == 64
    assert recipe.decoder == "decord" and manifest.versions["vfx_tasks"]
    # and the index has one row per feature file, whose clip count is the array's first dimension.
    rows = read_index(out)
    assert sorted(rows) == ["a", "sub/b"]
    for row in rows.values():
        assert np.load(out / row.feature_file).shape[0] == row.clips == len(row.clip_start_frames)
        assert row.clip_span_frames == 64
    assert (rows["a"].frames, rows["sub/b"].frames, rows["sub/b"].fps) == (40, 70, 30.0)

    # When a run with another precision aims at the same folder, it stops before queueing,
    other = run_cli(ENQUEUE, *args, "--precision", "bf16", env=queue_env)
    assert other.returncode == 2
    assert "precision bf16 (this run) vs fp32 (the folder)" in other.stderr and "--output_dir" in other.stderr
    ledger = Ledger.from_url(redis_url)
    bf16_run = run_spec(out, precision="bf16")
    assert ledger.counts(bf16_run.run_id).queued == 0

    # and a task crafted with that precision fails permanently, with the reason.
    app = create_app(Settings.from_env(queue_env), producer_only=True)
    kwargs = job_of(bf16_run, VideoItem("a", str(videos / "a.mp4"))).to_message()
    app.send_task(EXTRACT_VIDEO_TASK, kwargs=kwargs, task_id=bf16_run.task_id("a"))
    wait_until(lambda: "a" in ledger.entries(bf16_run.run_id, "failed"), "the mismatched task to fail")
    reason = ledger.entries(bf16_run.run_id, "failed")["a"]
    assert reason["code"] == "manifest_mismatch"
    assert "precision bf16 (task) vs fp32 (folder)" in reason["message"]

    # With --force, another clip sampling replaces the manifest and recomputes every video.
    before = (out / "a.npy").stat().st_mtime_ns
    forced = run_cli(ENQUEUE, *args, "--clip_sampling", "uniform", "--force", "--wait", env=queue_env)
    assert forced.returncode == 0, forced.stderr
    assert read_manifest(out).settings.recipe.clip_sampling == "uniform"
    assert (out / "a.npy").stat().st_mtime_ns != before

    # vfx-status shows the manifest and rebuilds the index from the files.
    (out / "index.csv").unlink()
    env = {"VFX_BROKER_URL": redis_url}
    shown = CliRunner().invoke(status.main, ["--output_dir", str(out), "--write-index"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "vfx-run.json: " in shown.output and "uniform" in shown.output
    assert "2 feature files, 2 index rows" in shown.output
    rebuilt = read_index(out)
    assert {k: (r.frames, r.clips) for k, r in rebuilt.items()} == {"a": (40, 1), "sub/b": (70, 1)}
    as_json = CliRunner().invoke(status.main, ["--output_dir", str(out), "--json"], env=env)
    assert json.loads(as_json.output)["outputs"]["feature_files_per_folder"] == {".": 1, "sub": 1}

