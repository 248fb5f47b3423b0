"""Time limits: a task that runs too long or hangs ends as a recorded ``timeout`` failure, not a held slot."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import WorkerProcess, run_cli, run_spec, wait_until
from tests.helpers import ENQUEUE
from vfx_tasks.errors import ConfigurationError
from vfx_tasks.queue.app import celery_config
from vfx_tasks.queue.job import Run
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.settings import Settings

#: Three clips of 720p in ten crops: about 30 backbone passes, tens of seconds on a CPU, whatever
#: the machine (pool processes import torch before their first task, so that is not the slow part).
COMMON = ["--model", "i3d", "--crop_type", "10-crop", "--poll_seconds", "0.2"]

pytestmark = pytest.mark.slow

THREADS = ("--pool", "threads", "--concurrency", "2")


def slow_run(output_dir: Path) -> Run:
    return run_spec(output_dir, crop_type="10-crop", num_clips_per_video=-1)


def enqueue_and_wait(tmp_path: Path, sample_videos_dir: Path, env: dict[str, str]) -> tuple[Path, str]:
    """Queue one video and wait for it (at most a minute); the output folder and vfx-enqueue's stderr."""
    videos, out = tmp_path / "videos", tmp_path / "features"
    videos.mkdir()
    shutil.copy(sample_videos_dir / "bigbuckbunny.mp4", videos / "slow.mp4")
    result = run_cli(
        ENQUEUE, "--input_dir", str(videos), "--output_dir", str(out), *COMMON,
        "--wait", "--wait-timeout", "60", env=env, timeout=90,
    )
    # A failed video, reported with its reason: exit 1, not the wait timeout's 4.
    assert result.returncode == 1, result.stderr
    assert "0 done, 1 failed of 1" in result.stderr, result.stderr
    assert "FAILED slow: [timeout]" in result.stderr, result.stderr
    return out, result.stderr


# Celery's threads pool keeps no time limits of its own: there the inference loop keeps the soft one.
@pytest.mark.parametrize("pool", [(), THREADS], ids=["prefork", "threads"])
def test_a_task_past_its_soft_limit_fails_with_reason_timeout(
    pool: tuple[str, ...],
    tmp_path: Path,
    sample_videos_dir: Path,
    start_worker: Callable[..., WorkerProcess],
    queue_env: dict[str, str],
    redis_url: str,
) -> None:
    # Given a worker whose tasks may run one second (the video takes tens),
    start_worker(*pool, VFX_TASK_SOFT_TIME_LIMIT_SECONDS="1", VFX_TASK_TIME_LIMIT_SECONDS="60")
    # when a video is queued and waited for,
    out, stderr = enqueue_and_wait(tmp_path, sample_videos_dir, queue_env)
    # then it fails with reason timeout, naming the setting to raise, and no output is left.
    assert "VFX_TASK_SOFT_TIME_LIMIT_SECONDS" in stderr
    reason = Ledger.from_url(redis_url).entries(slow_run(out).run_id, "failed")["slow"]
    assert reason["code"] == "timeout"
    assert list(out.rglob("*.npy")) == []


def test_a_task_past_its_hard_limit_is_killed_and_recorded_once(
    tmp_path: Path,
    sample_videos_dir: Path,
    start_worker: Callable[..., WorkerProcess],
    queue_env: dict[str, str],
    redis_url: str,
) -> None:
    # Given a worker with no soft limit (as if stuck in a decoder, deaf to it) and a hard one of 2 s,
    worker = start_worker(VFX_TASK_SOFT_TIME_LIMIT_SECONDS="0", VFX_TASK_TIME_LIMIT_SECONDS="2")
    # when a video is queued and waited for,
    out, stderr = enqueue_and_wait(tmp_path, sample_videos_dir, queue_env)
    # then its process is killed and the video recorded as failed with reason timeout,
    assert "hard time limit of 2" in stderr
    ledger, run_id = Ledger.from_url(redis_url), slow_run(out).run_id
    # and the message was acknowledged, not handed back: nothing starts it again.
    time.sleep(3)
    counts = ledger.counts(run_id)
    assert (counts.queued, counts.running, counts.failed) == (0, 0, 1), counts
    assert ledger.entries(run_id, "failed")["slow"]["code"] == "timeout"
    assert "Hard time limit (2" in worker.log() and worker.process.poll() is None


def test_the_threads_pool_keeps_the_hard_limit_and_never_runs_the_video_again(
    tmp_path: Path,
    sample_videos_dir: Path,
    start_worker: Callable[..., WorkerProcess],
    queue_env: dict[str, str],
    redis_url: str,
) -> None:
    # Given a threads worker with no soft limit (as if stuck in a decoder) and a hard one of 2 s,
    # whose unacknowledged messages Redis hands out again after 12 s,
    limits = {"VFX_TASK_SOFT_TIME_LIMIT_SECONDS": "0", "VFX_TASK_TIME_LIMIT_SECONDS": "2",
              "VFX_VISIBILITY_TIMEOUT_SECONDS": "12"}  # fmt: skip
    worker = start_worker(*THREADS, name="limited@%h", **limits)
    # when a video is queued and waited for,
    out, stderr = enqueue_and_wait(tmp_path, sample_videos_dir, {**queue_env, **limits})
    # then the watchdog records it as failed with reason timeout and ends the worker process,
    assert "hard time limit of 2" in stderr
    assert worker.process.wait(30) == 3
    assert "ran past the hard time limit" in worker.log()
    # and once the worker is back and Redis hands the unacknowledged message out again,
    again = start_worker(*THREADS, name="limited@%h", **limits)
    wait_until(lambda: "acknowledged without work" in again.log(), "the stale message to come back", 90)
    # it is acknowledged without running the video again.
    ledger, run_id = Ledger.from_url(redis_url), slow_run(out).run_id
    counts = ledger.counts(run_id)
    assert (counts.queued, counts.running, counts.failed, counts.done) == (0, 0, 1, 0), counts
    assert ledger.entries(run_id, "failed")["slow"]["code"] == "timeout"
    assert list(out.rglob("*.npy")) == []


def test_a_soft_limit_at_or_past_the_hard_one_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="soft 60 s >= hard 60 s"):
        Settings.from_env({"VFX_TASK_SOFT_TIME_LIMIT_SECONDS": "60", "VFX_TASK_TIME_LIMIT_SECONDS": "60"})
    # 0 is "no limit", never a contradiction; and the app hands Celery None for it.
    settings = Settings.from_env({}, task_soft_time_limit_seconds=0, task_time_limit_seconds=5)
    config = celery_config(settings)
    assert (config["task_soft_time_limit"], config["task_time_limit"]) == (None, 5)
