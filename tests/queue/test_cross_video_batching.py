"""A threads-pool worker: one inference loop batching the clips of every video in flight, through
a corrupt video and a SIGKILL of the whole worker in the middle of the run."""

from __future__ import annotations

import os
import re
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import (
    PROCESS_TIMEOUT_SECONDS,
    WorkerProcess,
    run_spec,
    wait_until,
    write_test_video,
)
from tests.helpers import start_enqueue_wait
from vfx_tasks.extract.pipeline import FeatureExtractor
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.storage import find_temp_files

pytestmark = pytest.mark.slow

#: Frames of the good videos: 1 to 5 clips of 64 frames.
LENGTHS = (20, 100, 150, 250, 300)
WAIT_TIMEOUT_SECONDS = 240
THREADS_WORKER = ("--pool", "threads", "--concurrency", "4")


def test_videos_share_batches_through_a_corrupt_video_and_a_killed_worker(
    tmp_path: Path,
    queue_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    redis_url: str,
    pretrained_dir: Path,
) -> None:
    videos, out = tmp_path / "videos", tmp_path / "features"
    for i, frames in enumerate(LENGTHS):
        write_test_video(videos / f"v{i}.mp4", width=80 + 16 * i, height=64, num_frames=frames)
    (videos / "corrupt.mp4").write_bytes((videos / "v4.mp4").read_bytes()[:2000] + b"\0" * 5000)
    run = run_spec(out, num_clips_per_video=-1)
    ledger = Ledger.from_url(redis_url)
    # Given a threads-pool worker with four videos in flight and forwards of two clip-crops,
    name = f"batched@{socket.gethostname()}"
    worker = start_worker(*THREADS_WORKER, name=name)
    wait_until(lambda: " ready." in worker.log(), "the worker to be ready")
    decoders = min(4, len(os.sched_getaffinity(0)))  # one per core, at most one per video in flight
    plan = f"threads pool, 4 video(s) in flight sharing one inference loop, {decoders} decoding at a time"
    assert plan in worker.log()
    args = ["--input_dir", str(videos), "--output_dir", str(out)]
    args += ["--num_clips_per_video", "-1", "--batch_size", "2"]  # every clip, two per forward
    waiting = start_enqueue_wait(queue_env, *args, wait_timeout=WAIT_TIMEOUT_SECONDS)
    # when the whole worker is SIGKILLed with videos half done (once every video has started or
    # ended: a message taken from the queue but not started yet is not held by anyone the
    # ledger knows, see the session note on issue 12),
    def half_done() -> bool:
        counts = ledger.counts(run.run_id)
        return counts.done >= 1 and counts.running >= 2 and counts.done + counts.running + counts.failed == 6

    wait_until(half_done, "every video started, one done and two running")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.process.wait(PROCESS_TIMEOUT_SECONDS)
    # and started again under its name,
    start_worker(*THREADS_WORKER, name=name)
    _, stderr = waiting.communicate(timeout=WAIT_TIMEOUT_SECONDS + 30)
    # the run ends with every good video done and the corrupt one failed alone, with its reason,
    assert waiting.returncode == 1, stderr
    assert f"{len(LENGTHS)} done, 1 failed of {len(LENGTHS) + 1}" in stderr, stderr
    assert "FAILED corrupt: [bad_video]" in stderr, stderr
    # and each output is whole and equals the video's features computed on their own.
    i3d = FeatureExtractor("i3d", pretrained_dir=pretrained_dir, device="cpu")
    for i in range(len(LENGTHS)):
        features = np.load(out / f"v{i}.npy")
        expected = i3d.extract(videos / f"v{i}.mp4", crop_type="center").features
        assert features.shape == expected.shape == (i + 1, 1, 2048)
        rel = np.linalg.norm(features - expected) / np.linalg.norm(expected)
        assert rel <= 1e-5, (i, rel)
    assert not find_temp_files(out)
    # Forwards held clips of several videos (the worker logs its loop's figures after each video).
    logs = "".join(path.read_text() for path in tmp_path.glob("worker-*.log"))
    assert max(int(count) for count in re.findall(r"(\d+) shared between videos", logs)) >= 1
    assert not (out / "corrupt.npy").exists()
