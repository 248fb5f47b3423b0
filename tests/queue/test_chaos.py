"""Chaos: pool children, whole workers and Redis itself killed and restarted during one run.

The product's contract under all of it: ``vfx-enqueue --wait`` ends with exit code 0 without a
rerun, every video has exactly one complete output equal to the pipeline's, no temporary file is
left, ``vfx-status`` shows everything done and nothing running, and a rerun queues nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import (
    PROCESS_TIMEOUT_SECONDS,
    RestartableRedis,
    WorkerProcess,
    run_cli,
    run_spec,
    wait_until,
    write_test_video,
)
from tests.helpers import ENQUEUE, RUN_SPEC_OPTIONS, start_enqueue_wait
from vfx_tasks.extract.pipeline import FeatureExtractor
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.storage import find_temp_files

pytestmark = [pytest.mark.slow, pytest.mark.restartable_redis]

#: Distinct contents, each copied into several videos: enough work (two clips per video) for the
#: run to outlast the chaos, and few reference extractions to compare the outputs with.
CONTENTS = 6
COPIES = 4
CLIPS = 2


def write_videos(folder: Path) -> dict[str, Path]:
    """``relative_id -> the video whose content it has``: CONTENTS x COPIES one-clip videos."""
    originals = [
        write_test_video(folder / "originals" / f"c{i}.mp4", width=96 + 8 * i, height=64, num_frames=80)
        for i in range(CONTENTS)
    ]
    videos = {}
    for copy in range(COPIES):
        (folder / "videos" / f"copy{copy}").mkdir(parents=True)
        for i, original in enumerate(originals):
            shutil.copy(original, folder / "videos" / f"copy{copy}" / f"c{i}.mp4")
            videos[f"copy{copy}/c{i}"] = original
    return videos


@pytest.fixture
def workers(queue_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, list[WorkerProcess]]]:
    """Workers ``a@<host>`` and ``b@<host>``, each a list of its processes (restarts append); all stopped."""
    started = {name: [WorkerProcess(queue_env, tmp_path / f"{name}-0.log", f"{name}@%h")] for name in "ab"}
    yield started
    for processes in started.values():
        for process in processes:
            process.stop()


def test_everything_dies_once_and_nothing_is_lost(
    tmp_path: Path,
    queue_env: dict[str, str],
    restartable_redis: RestartableRedis,
    workers: dict[str, list[WorkerProcess]],
    pretrained_dir: Path,
) -> None:
    started = time.monotonic()
    videos = write_videos(tmp_path)
    out = tmp_path / "features"
    ledger, run_id = (
        Ledger.from_url(restartable_redis.url),
        run_spec(out, num_clips_per_video=CLIPS).run_id,
    )
    host = socket.gethostname()

    def running_on(name: str) -> Callable[[], bool]:
        return lambda: f"{name}@{host}" in ledger.entries(run_id, "running").values()

    def progressed_since(done: int) -> Callable[[], bool]:
        return lambda: ledger.counts(run_id).done > done

    def mid_run(what: str) -> int:
        assert waiting.poll() is None, f"the run ended before {what}: {waiting.communicate()}"
        return ledger.counts(run_id).done

    # Given two workers and a run of 24 videos followed by `vfx-enqueue --wait`,
    args = ["--input_dir", str(tmp_path / "videos"), "--output_dir", str(out)]
    args += ["--num_clips_per_video", str(CLIPS)]
    waiting = start_enqueue_wait(queue_env, *args, wait_timeout=2 * PROCESS_TIMEOUT_SECONDS)
    # when a pool child is SIGKILLed (the OOM killer) in the middle of a video,
    wait_until(running_on("a"), "worker a to run a video")
    os.kill(workers["a"][-1].pool_children()[0], signal.SIGKILL)
    done = mid_run("the pool child was killed")
    # a whole worker is SIGKILLed (a lost machine) in the middle of a video and comes back under its name,
    wait_until(running_on("b"), "worker b to run a video")
    os.killpg(workers["b"][-1].pid, signal.SIGKILL)
    workers["b"][-1].process.wait(PROCESS_TIMEOUT_SECONDS)
    workers["b"].append(WorkerProcess(queue_env, tmp_path / "b-1.log", "b@%h"))
    wait_until(lambda: " ready." in workers["b"][-1].log(), "worker b to come back")
    done = mid_run("the worker was killed")
    # Redis is stopped (SIGTERM) and started again 2 s later while videos run,
    wait_until(progressed_since(done), "a video to finish")
    restartable_redis.restart(signal.SIGTERM, down_seconds=2)
    done = mid_run("the Redis restart")
    # and Redis crashes (SIGKILL, its AOF fsynced every second) and is started again 1 s later,
    wait_until(progressed_since(done), "a video to finish after the restart")
    restartable_redis.restart(signal.SIGKILL, down_seconds=1)
    mid_run("the Redis crash")
    _, stderr = waiting.communicate(timeout=3 * PROCESS_TIMEOUT_SECONDS)
    logs = "\n".join(process.log() for processes in workers.values() for process in processes)

    # then the wait ends with every video done, without a rerun,
    assert waiting.returncode == 0, stderr + logs
    assert f"{len(videos)} done, 0 failed of {len(videos)}" in stderr
    assert "Requeued" in logs  # the videos cut off by the Redis outages, or left by the killed worker
    # each with exactly one output, equal to the pipeline's, and no temporary file left;
    assert sorted(p.relative_to(out).with_suffix("").as_posix() for p in out.rglob("*.npy")) == sorted(videos)
    assert find_temp_files(out) == []
    extractor = FeatureExtractor("i3d", pretrained_dir=pretrained_dir, device="cpu")
    references = {
        original: extractor.extract(original, crop_type="center", num_clips_per_video=CLIPS).features
        for original in set(videos.values())
    }
    for relative_id, original in videos.items():
        np.testing.assert_array_equal(np.load(out / f"{relative_id}.npy"), references[original], relative_id)
    # vfx-status shows everything done and nothing running,
    status = run_cli("vfx_tasks.cli.status", "--output_dir", str(out), "--json", env=queue_env)
    assert status.returncode == 0, status.stderr
    totals = json.loads(status.stdout)["totals"]
    assert totals == {"queued": 0, "running": 0, "done": len(videos), "failed": 0}, status.stdout
    # and running the same command again queues nothing.
    rerun = run_cli(ENQUEUE, *RUN_SPEC_OPTIONS, *args, env=queue_env)
    assert rerun.returncode == 0 and f"Queued 0 of {len(videos)}" in rerun.stderr, rerun.stderr
    print(f"chaos run took {time.monotonic() - started:.0f} s")
