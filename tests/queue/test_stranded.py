"""A video in a state the chaos test hits only now and then, brought about on purpose: a delivery
received and not started when its worker dies.

Real redis-server, real workers, real videos; what is checked is what a user sees (``--wait``'s
exit code and counts, the outputs), so that these tests mean the same before and after a change.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.conftest import (
    PROCESS_TIMEOUT_SECONDS,
    WorkerProcess,
    run_spec,
    wait_until,
    write_test_video,
)
from tests.helpers import start_enqueue_wait
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.storage import find_temp_files, is_valid_output

pytestmark = pytest.mark.slow

#: Long enough for every recovery these tests expect (seconds), far below the visibility timeout.
WAIT_TIMEOUT_SECONDS = 120


def write_videos(folder: Path, count: int, *, clips: int = 2) -> Path:
    """``count`` distinct videos of ``clips`` clips each (96x64): a second or two of work per clip."""
    for i in range(count):
        write_test_video(folder / f"v{i}.mp4", width=96 + 8 * i, height=64, num_frames=64 * clips - 20)
    return folder


def enqueue_and_wait(env: dict[str, str], videos: Path, out: Path) -> subprocess.Popen[str]:
    args = ["--input_dir", str(videos), "--output_dir", str(out), "--num_clips_per_video", "-1"]
    return start_enqueue_wait(env, *args, wait_timeout=WAIT_TIMEOUT_SECONDS)


def assert_all_done(waiting: subprocess.Popen[str], out: Path, count: int, logs: Callable[[], str]) -> None:
    _, stderr = waiting.communicate(timeout=WAIT_TIMEOUT_SECONDS + 30)
    assert waiting.returncode == 0, stderr + logs()
    assert f"{count} done, 0 failed of {count}" in stderr
    outputs = sorted(out.glob("*.npy"))
    assert [p.stem for p in outputs] == [f"v{i}" for i in range(count)]
    assert all(is_valid_output(p, n_crops=1, feature_dim=2048, num_clips_per_video=-1) for p in outputs)
    assert find_temp_files(out) == []


def test_a_video_received_and_not_started_when_its_worker_dies_goes_back_with_its_restart(
    tmp_path: Path, queue_env: dict[str, str], start_worker: Callable[..., WorkerProcess], redis_url: str
) -> None:
    videos, out = write_videos(tmp_path / "videos", 3), tmp_path / "features"
    run = run_spec(out, num_clips_per_video=-1)
    ledger, client = Ledger.from_url(redis_url), redis.Redis.from_url(redis_url)
    # Given a worker (prefork, one pool process) on a run of three videos,
    worker = start_worker(name="test0@%h")
    waiting = enqueue_and_wait(queue_env, videos, out)
    wait_until(lambda: bool(ledger.entries(run.run_id, "running")), "the worker to run a video")
    # whose pool process dies (the OOM killer): Celery puts that video back, and takes the next
    # one while a new pool process starts (it imports torch: seconds),
    os.kill(worker.pool_children()[0], signal.SIGKILL)

    def received_not_started() -> bool:
        running = {run.task_id(relative_id) for relative_id in ledger.entries(run.run_id, "running")}
        delivered = {raw.decode() for raw in client.hkeys("unacked")}
        tasks = {tag: (client.hget("unacked", tag) or b"").decode() for tag in delivered}
        return bool(tasks) and not any(task_id in entry for entry in tasks.values() for task_id in running)

    wait_until(received_not_started, "the worker to hold a video it has not started")
    time.sleep(1)
    assert received_not_started(), "the video started: the moment to kill the worker passed"
    # when the whole worker is killed in that moment (a lost machine) and restarted under its name,
    os.killpg(worker.pid, signal.SIGKILL)
    worker.process.wait(PROCESS_TIMEOUT_SECONDS)
    restarted = start_worker(name="test0@%h")
    # then the restart puts back the video its predecessor had received, and the run ends.
    assert_all_done(waiting, out, 3, lambda: worker.log() + restarted.log())
    assert "Requeued 1 video(s) that an earlier run of test0@" in restarted.log(), restarted.log()
    assert client.hlen("unacked") == 0
