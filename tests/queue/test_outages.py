"""Redis restarts during a run (graceful and crashes): workers and ``--wait`` ride them out, nothing is lost.

Real redis-server with an append-only file on a fixed port, real workers, real videos.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import (
    PROCESS_TIMEOUT_SECONDS,
    RestartableRedis,
    WorkerProcess,
    run_spec,
    wait_until,
    write_test_video,
)
from tests.helpers import start_enqueue_wait
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.storage import find_temp_files, is_valid_output

pytestmark = [pytest.mark.slow, pytest.mark.restartable_redis]


def write_short_videos(folder: Path, count: int) -> Path:
    """``count`` distinct videos of one clip each (40 frames, 96x64): quick to decode and extract."""
    for i in range(count):
        write_test_video(folder / f"v{i:02d}.mp4", width=96 + 2 * i, height=64, num_frames=40)
    return folder


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "crash"])
def test_a_redis_restart_loses_nothing_and_the_wait_goes_on(
    stop_signal: signal.Signals,
    tmp_path: Path,
    queue_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    restartable_redis: RestartableRedis,
) -> None:
    videos, out = write_short_videos(tmp_path / "videos", 8), tmp_path / "features"
    ledger, run_id = Ledger.from_url(restartable_redis.url), run_spec(out).run_id
    # Given two workers busy with a run that `vfx-enqueue --wait` follows,
    workers = [start_worker(), start_worker()]
    args = ["--input_dir", str(videos), "--output_dir", str(out)]
    waiting = start_enqueue_wait(queue_env, *args, wait_timeout=2 * PROCESS_TIMEOUT_SECONDS)
    wait_until(lambda: len(ledger.entries(run_id, "running")) == 2, "both workers running a video")
    # when Redis stops (SIGTERM: a restart; SIGKILL: a crash, the AOF fsynced every second) and
    # comes back 2 s later on the same port and folder,
    restartable_redis.restart(stop_signal, down_seconds=2)
    # then the wait says so, goes on counting, and ends with every video done,
    _, stderr = waiting.communicate(timeout=2 * PROCESS_TIMEOUT_SECONDS)
    logs = "\n".join(worker.log() for worker in workers)
    assert waiting.returncode == 0, stderr + logs
    assert "8 done, 0 failed of 8" in stderr
    assert "Lost Redis at redis://127.0.0.1" in stderr and "Reconnected to Redis" in stderr
    # the videos in flight at the outage ran again (within seconds, not after the visibility timeout),
    assert "Requeued" in logs, logs
    # each with exactly one complete output, and the ledger shows nothing left running.
    assert sorted(p.name for p in out.glob("*.npy")) == [f"v{i:02d}.npy" for i in range(8)]
    assert all(
        is_valid_output(p, n_crops=1, feature_dim=2048, num_clips_per_video=1) for p in out.glob("*.npy")
    )
    assert find_temp_files(out) == []
    assert ledger.entries(run_id, "running") == {}
    assert ledger.counts(run_id).done == 8
