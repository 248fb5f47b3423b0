"""Steps 1 and 3 of ``gpu_acceptance.py``: programs run as a user would, each within a time limit.

Step 1 runs ``pytest -m gpu`` (``VFX_REQUIRE_GPU=1`` turns a missing GPU into failures, not
skips); step 3 runs ``vfx-enqueue --local`` over the generated videos and reads the worker plan
from the worker's log while the run is going (``--local`` deletes the logs of a run that
succeeds). Both are started in their own process group, so that a run past its limit is stopped
with everything it started.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from device_sampler import DeviceSampler  # noqa: E402

#: pytest -v's line per test, written as it ends: counted even when the run is cut short.
_PYTEST_OUTCOME = re.compile(r"^tests/\S+ (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b", re.MULTILINE)
_PYTEST_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)
#: vfx-enqueue's summary: "32 done, 0 failed of 32 in 0:00:42 (256 clips)."
_QUEUE_SUMMARY = re.compile(r"(\d+) done, (\d+) failed of (\d+) in (\S+) \((\d+) clips\)")
#: vfx-worker's plan line: "<hostname>: threads pool, 64 video(s) in flight ...".
_WORKER_PLAN = re.compile(r"^(\S+): ((?:threads|prefork) pool, .*)$", re.MULTILINE)


def run_limited(command: list[str], *, env: dict[str, str], cwd: Path, timeout: float, log_path: Path,
                poll: Callable[[], None] | None = None) -> tuple[int | None, float]:
    """Run ``command`` with its output in ``log_path``; ``(exit code or None past timeout, seconds)``.

    Past ``timeout`` the program gets SIGTERM (``vfx-enqueue`` then stops its workers and Redis
    as on Ctrl-C), 30 s later its whole process group SIGKILL.
    """
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        code: int | None = None
        while code is None and time.monotonic() - started < timeout:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = process.wait(timeout=0.25)
            if poll:
                poll()
        if code is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever it left in its group
        process.wait()
    return code, time.monotonic() - started


def pytest_command() -> list[str]:
    return [sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-rfEs", "-p", "no:cacheprovider",
            "--continue-on-collection-errors", "tests"]


def run_pytest(*, repo: Path, log_path: Path, timeout: float, require_gpu: bool) -> dict[str, object]:
    """``pytest -m gpu`` in ``repo``: counts, failed tests, seconds."""
    env = dict(os.environ)
    if require_gpu:
        env["VFX_REQUIRE_GPU"] = "1"
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a dry run measures nothing on a GPU, even where there is one
    code, seconds = run_limited(pytest_command(), env=env, cwd=repo, timeout=timeout, log_path=log_path)
    text = log_path.read_text(errors="replace")
    outcomes = _PYTEST_OUTCOME.findall(text)
    counts = {kind.lower(): outcomes.count(kind) for kind in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
    return {"exit_code": code, "seconds": seconds, **counts,
            "failed_tests": " ".join(_PYTEST_FAILED.findall(text)) or None,
            "status": "ok" if code == 0 else ("timed out" if code is None else f"pytest exited {code}")}


def run_queue(command: list[str], *, output_dir: Path, log_path: Path, timeout: float,
              tmp_dir: Path, sample_gpu: bool) -> dict[str, object]:
    """``vfx-enqueue --local``: videos/s, the worker plan(s), GPU busy and memory (NVML)."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp_dir))  # its log folder lands where it can be read
    plans: dict[str, str] = {}

    def read_plans() -> None:
        for log in tmp_dir.glob("vfx-local-logs-*/worker-*.log"):
            with contextlib.suppress(OSError):
                plans.update(_WORKER_PLAN.findall(log.read_text(errors="replace")))

    with DeviceSampler(enabled=sample_gpu) as sampler:
        code, seconds = run_limited(command, env=env, cwd=Path.cwd(), timeout=timeout, log_path=log_path,
                                    poll=read_plans)
    text = log_path.read_text(errors="replace")
    found = _QUEUE_SUMMARY.findall(text)
    done, failed, total = (int(v) for v in found[-1][:3]) if found else (0, 0, 0)
    features = sorted(output_dir.rglob("*.npy"))
    clip_crops = sum(int(np.prod(np.load(path, mmap_mode="r").shape[:2])) for path in features)
    return {
        "videos": total, "done": done, "failed": failed, "feature_files": len(features), "seconds": seconds,
        "videos_per_s": done / seconds if seconds else None, "clip_crops_per_s": clip_crops / seconds,
        "gpu_busy_percent": sampler.busy_percent, "peak_nvml_mib": sampler.peak_used_mib,
        "worker_plan": "; ".join(f"{host}: {plan}" for host, plan in plans.items())
        or "not seen in the worker log",
        "exit_code": code,
        "status": "ok" if code == 0 and done == total == len(features) > 0 else (
            "timed out" if code is None else f"vfx-enqueue exited {code}, {done} of {total} done"),
    }
