"""A worker that dies whole and never comes back: the live ones take its videos back within a minute."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

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

VIDEOS = 6
WAIT_TIMEOUT_SECONDS = 150


def test_videos_of_a_worker_that_never_comes_back_are_requeued(
    tmp_path: Path, queue_env: dict[str, str], start_worker: Callable[..., WorkerProcess], redis_url: str
) -> None:
    videos, out = tmp_path / "videos", tmp_path / "features"
    for i in range(VIDEOS):
        write_test_video(videos / f"v{i}.mp4", width=96 + 8 * i, height=64, num_frames=40)
    ledger, run_id = Ledger.from_url(redis_url), run_spec(out).run_id
    doomed_name = f"test0@{socket.gethostname()}"
    # Given two workers (prefork, one video at a time each) on a run of six videos,
    doomed, survivor = start_worker(), start_worker()
    for worker in (doomed, survivor):
        wait_until(lambda w=worker: " ready." in w.log(), "the workers to be ready")
    args = ["--input_dir", str(videos), "--output_dir", str(out)]
    waiting = start_enqueue_wait(queue_env, *args, wait_timeout=WAIT_TIMEOUT_SECONDS)
    # when one whole worker is SIGKILLed in the middle of a video (a lost machine) and never restarted,
    wait_until(lambda: doomed_name in ledger.entries(run_id, "running").values(), "the worker to run a video")
    (lost,) = [video for video, worker in ledger.entries(run_id, "running").items() if worker == doomed_name]
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.process.wait(PROCESS_TIMEOUT_SECONDS)
    killed_at = time.monotonic()
    _, stderr = waiting.communicate(timeout=WAIT_TIMEOUT_SECONDS + 30)
    # then the live worker takes its video back long before the visibility timeout (12 hours),
    assert waiting.returncode == 0, stderr + survivor.log()
    assert f"{VIDEOS} done, 0 failed of {VIDEOS}" in stderr
    assert time.monotonic() - killed_at < 120
    assert f"{lost} (was running on {doomed_name})" in survivor.log()
    # runs it, counting the death, and every video ends with one complete output and nothing running.
    assert f"{lost}: redelivered after 1 worker death" in survivor.log()
    outputs = sorted(p.stem for p in out.rglob("*.npy"))
    assert outputs == [f"v{i}" for i in range(VIDEOS)]
    for output in out.rglob("*.npy"):
        assert is_valid_output(output, n_crops=1, feature_dim=2048, num_clips_per_video=1), output
    assert find_temp_files(out) == []
    assert ledger.entries(run_id, "running") == {} and ledger.entries(run_id, "pending") == {}
