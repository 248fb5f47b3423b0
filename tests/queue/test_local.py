"""``vfx-enqueue --local``: private Redis and workers for one run, nothing left behind, even on Ctrl-C."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import redis

from tests.conftest import (
    PROCESS_TIMEOUT_SECONDS,
    alive_pids,
    descendant_pids,
    processes_with_marker,
    run_cli,
    run_spec,
    wait_until,
)
from tests.helpers import ENQUEUE, start_enqueue
from vfx_tasks.queue.app import EXTRACT_VIDEO_TASK, create_app
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.processes.cluster import LocalCluster
from vfx_tasks.queue.producer.enqueue import job_of
from vfx_tasks.settings import Settings
from vfx_tasks.sources.base import VideoItem
from vfx_tasks.storage import find_temp_files, is_valid_output

ARGS = [
    "--model",
    "i3d",
    "--crop_type",
    "center",
    "--num_clips_per_video",
    "1",
    "--poll_seconds",
    "0.2",
    "--wait-timeout",
    str(PROCESS_TIMEOUT_SECONDS),
]

pytestmark = pytest.mark.slow


def assert_no_process_left(marker: str, started: set[int], timeout: float = 10) -> None:
    """Neither a process started by the run (seen while it ran) nor one with its environment is alive."""

    def left() -> set[int]:
        return alive_pids(started) | set(processes_with_marker(marker))

    wait_until(lambda: not left(), lambda: f"the run's processes to end; left behind: {left()}", timeout)


def start_local(videos: Path, out: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return start_enqueue(
        {**env, "VFX_BROKER_URL": ""},  # --local needs no Redis of its own
        "--input_dir", str(videos), "--output_dir", str(out), *ARGS, "--local",
        # Ctrl-C as a terminal delivers it: whatever this test process inherited or was given by
        # the libraries it loaded, the run starts with SIGINT's default disposition.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def watch_descendants(process: subprocess.Popen[str], until: int | None = None) -> set[int]:
    """Pids below ``process`` seen until it exits (or until ``until`` of them run at once)."""
    seen: set[int] = set()

    def ended_or_enough() -> bool:
        current = descendant_pids(process.pid)
        seen.update(current)
        return process.poll() is not None or (until is not None and len(current) >= until)

    what = "the run to end" if until is None else f"{until} processes below the run"
    wait_until(ended_or_enough, what, PROCESS_TIMEOUT_SECONDS)
    return seen


def test_local_runs_everything_and_stops_everything(
    tmp_path: Path, sample_videos_dir: Path, queue_env: dict[str, str], process_marker: str
) -> None:
    videos, out = tmp_path / "videos", tmp_path / "features"
    (videos / "sub").mkdir(parents=True)
    shutil.copy(sample_videos_dir / "carphone_pristine.mp4", videos / "one.mp4")
    shutil.copy(sample_videos_dir / "carphone_distorted.mp4", videos / "sub" / "two.mp4")
    # Given nothing running, when the folder is extracted with --local,
    process = start_local(videos, out, queue_env)
    started = watch_descendants(process)
    _, stderr = process.communicate(timeout=PROCESS_TIMEOUT_SECONDS)
    # then every video is done and Redis and the workers are gone.
    assert process.returncode == 0, stderr
    assert "2 done, 0 failed of 2" in stderr
    assert len(started) >= 3, f"expected redis-server, a worker and its pool process, saw {started}"
    for relative in ("one.npy", "sub/two.npy"):
        assert is_valid_output(out / relative, n_crops=1, feature_dim=2048, num_clips_per_video=1)
    assert_no_process_left(process_marker, started)
    # Run again: nothing is left to do, so no worker is started at all.
    again = start_local(videos, out, queue_env)
    started_again = watch_descendants(again)
    _, stderr = again.communicate(timeout=PROCESS_TIMEOUT_SECONDS)
    assert again.returncode == 0, stderr
    assert "Queued 0 of 2" in stderr and "2 with valid output" in stderr
    assert "Starting local workers" not in stderr and "Nothing to wait for" in stderr
    assert_no_process_left(process_marker, started_again)


def test_local_workers_get_the_pool_and_concurrency(tmp_path: Path) -> None:
    settings = Settings.from_env({}, device="cpu")
    cluster = LocalCluster(settings, output_dir=tmp_path, concurrency=3, pool="threads")
    command, environ = cluster.worker_launch(0, None)
    assert command[command.index("--pool") + 1] == "threads"
    assert command[command.index("--concurrency") + 1] == "3"
    assert environ["VFX_DEVICE"] == "cpu" and environ["CUDA_VISIBLE_DEVICES"] == ""
    assert "vfx_tasks.cli" not in " ".join(command)  # the queue starts Celery itself
    pinned, pinned_environ = cluster.worker_launch(1, 2)
    assert pinned_environ["CUDA_VISIBLE_DEVICES"] == "2" and pinned_environ["VFX_DEVICE"] == "cuda"
    assert cluster.plans[0].startswith("threads pool, 3 video(s) in flight")
    shutil.rmtree(cluster.log_dir)


def test_ctrl_c_stops_local_run_without_leftovers(
    tmp_path: Path, sample_videos_dir: Path, queue_env: dict[str, str], process_marker: str
) -> None:
    videos, out = tmp_path / "videos", tmp_path / "features"
    videos.mkdir()
    # Enough videos that the run is far from its end when the first one is done.
    for index in range(16):
        shutil.copy(sample_videos_dir / "carphone_pristine.mp4", videos / f"v{index}.mp4")
    # Given a --local run with its worker busy on the videos (redis-server, worker and pool process
    # up, one video done),
    process = start_local(videos, out, queue_env)
    started = watch_descendants(process, until=3)
    wait_until(lambda: process.poll() is not None or any(out.glob("*.npy")), "a first video done")
    assert process.poll() is None, "the --local run ended before it could be interrupted"
    started |= descendant_pids(process.pid)
    ignored = [line for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
               if line.startswith(("SigIgn", "SigBlk"))]  # fmt: skip
    # when the user presses Ctrl-C,
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    # then it exits as interrupted and leaves no process and no partial file behind.
    assert process.returncode == 130, (ignored, stderr)
    assert "Interrupted" in stderr and "Traceback" not in stderr
    assert_no_process_left(process_marker, started)
    assert not out.exists() or find_temp_files(out) == []


def test_missing_weights_stop_a_local_run_before_anything_starts(
    tmp_path: Path, sample_videos_dir: Path, queue_env: dict[str, str], process_marker: str
) -> None:
    # Given a folder of videos and an empty pretrained folder
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(sample_videos_dir / "carphone_pristine.mp4", videos / "a.mp4")
    empty = tmp_path / "no-weights"
    empty.mkdir()
    # When the local run starts
    result = run_cli(
        ENQUEUE, "--local", "--input_dir", str(videos), "--output_dir", str(tmp_path / "out"),
        "--pretrained_dir", str(empty), *ARGS,
        env={k: v for k, v in queue_env.items() if k != "VFX_BROKER_URL"}, timeout=120,
    )
    # Then it stops at once as a usage error naming the file and how to get it, having started nothing
    assert result.returncode == 2, result.stderr
    assert "not found at" in result.stderr and "vfx-download-models" in result.stderr
    assert "Traceback" not in result.stderr
    assert processes_with_marker(process_marker) == []
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").rglob("*.npy")) == []


def test_local_redis_keeps_its_password_out_of_sight(tmp_path: Path, pretrained_dir: Path) -> None:
    out = tmp_path / "features"
    cluster = LocalCluster(Settings.from_env({}, device="cpu", pretrained_dir=pretrained_dir), output_dir=out)
    try:
        # Given a local cluster (its Redis and one worker) up and running,
        cluster.start()
        password, url, log = cluster.redis.password, cluster.broker_url, cluster.log_dir / "worker-0.log"
        wait_until(lambda: " ready." in log.read_text(errors="replace"), "the local worker to be ready")
        # another local user who connects without the password, or with a guess, is refused;
        for guess in (None, "guess"):
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(host="127.0.0.1", port=cluster.redis.port, password=guess).ping()
        # no process shows the password on its command line (which any user can read),
        pids = {cluster.redis.process.pid} | {w.pid for w in cluster.workers}
        pids |= {child for w in cluster.workers for child in descendant_pids(w.pid)}
        assert len(pids) >= 3, pids
        for pid in pids:
            assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes(), pid
        # and when an error quotes the URL (a path that holds it, its // collapsed on the way),
        run = run_spec(out)
        item = VideoItem(relative_id="leak", path=f"{tmp_path}/{url}.mp4")
        app = create_app(Settings.from_env({}, broker_url=url))
        kwargs = job_of(run, item).to_message()
        app.send_task(EXTRACT_VIDEO_TASK, kwargs=kwargs, task_id=run.task_id("leak"))
        ledger = Ledger.from_url(url)
        wait_until(lambda: "leak" in ledger.entries(run.run_id, "failed"), "the failure to be recorded", 90)
        # the failure is recorded with the password masked, in the ledger and in the result backend,
        reason = ledger.entries(run.run_id, "failed")["leak"]
        assert reason["code"] == "untrusted_message" and "**" in reason["message"]
        assert password not in reason["message"]
        stored = app.AsyncResult(run.task_id("leak"))
        wait_until(lambda: stored.state == "FAILURE", "the result backend to hold the failure", timeout=30)
        assert password not in str(stored.result) and password not in str(stored.traceback)
        # and the worker's log never held it.
        assert password not in log.read_text(errors="replace")
    finally:
        cluster.stop()
        shutil.rmtree(cluster.log_dir, ignore_errors=True)
