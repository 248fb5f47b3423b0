"""``benchmarks/gpu_acceptance.py`` keeps working between GPU leases: its ``--dry-run`` runs every
step on the CPU with tiny sizes, and without a GPU the real run stops at once."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_DIR

SCRIPT = REPO_DIR / "benchmarks" / "gpu_acceptance.py"


def run_script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_DIR), env.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO_DIR, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_dry_run_runs_every_step_and_writes_every_table(tmp_path: Path, pretrained_dir: Path) -> None:
    # Given no GPU figures to take, when the dry run goes through the same steps
    out = tmp_path / "out"
    done = run_script("--dry-run", "--out", str(out), "--pretrained-dir", str(pretrained_dir),
                      "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    # Then each step passed and left its table, in the few files the device tool brings back
    assert sorted(path.name for path in out.iterdir()) == [
        "gpu-acceptance.json", "gpu-acceptance.md", "pytest-gpu.log", "queue.log"]
    report = json.loads((out / "gpu-acceptance.json").read_text())
    assert [(step["step"], step["status"]) for step in report["steps"]] == [
        ("pytest", "ok"), ("matrix", "ok"), ("queue", "ok")]
    assert report["tables"]["pytest -m gpu"][0]["skipped"] >= 1  # the gpu tests, collected and skipped
    decoders = {"decord", "pyav"} if importlib.util.find_spec("av") else {"decord"}
    rows = report["tables"]["Throughput: I3D center, 384x288"]
    assert {(row["path"], row["decoder"], row["precision"]) for row in rows} == {
        (path, decoder, precision) for path in ("naive", "per-video", "batched") for decoder in decoders
        for precision in ("fp32", "bf16")}
    for row in rows:
        assert row["status"] == "ok" and row["clip_crops"] >= 1 and row["clip_crops_per_s"] > 0, row
        assert row["rel"] <= row["tolerance"] and row["x_naive"] > 0, row
        assert row["gpu_busy_percent"] is None and row["peak_torch_mib"] is None  # no GPU numbers
    queue = report["tables"]["Whole queue: vfx-enqueue --local"][0]
    assert (queue["done"], queue["failed"], queue["feature_files"]) == (2, 0, 2)
    assert "prefork pool" in queue["worker_plan"] and queue["videos_per_s"] > 0
    markdown = (out / "gpu-acceptance.md").read_text()
    assert "| GPU | none: --dry-run on the CPU (no GPU figures) |" in markdown
    assert "python3 -m vfx_tasks.cli.enqueue --local --input_dir" in markdown
    assert "python3 -m pytest -m gpu" in markdown and "gpu_acceptance.py --dry-run --out" in markdown


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
def test_without_a_gpu_the_real_run_stops_at_once_with_exit_2(tmp_path: Path) -> None:
    done = run_script("--out", str(tmp_path / "out"), timeout=120)
    assert done.returncode == 2
    assert "No CUDA GPU is visible" in done.stderr and "--dry-run" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing measured, nothing written


def test_without_an_output_folder_it_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUT", raising=False)
    done = run_script("--dry-run", timeout=120)
    assert done.returncode == 2 and "--out" in done.stderr
