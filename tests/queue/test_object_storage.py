"""Runs in and out of object storage with real workers, against a real S3-compatible server (moto).

The same videos go through the local path and through ``s3://`` and must come out equal; a worker
killed outright, an endpoint that throttles, an object deleted after the listing and a bucket
that refuses access each end as the queue promises: done, retried, ``not_found``, or exit 2 with
nothing queued.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import PROCESS_TIMEOUT_SECONDS, run_cli, run_spec, wait_until
from tests.helpers import ENQUEUE, RUN_SPEC_OPTIONS, start_enqueue, start_enqueue_wait
from tests.s3_replica import FaultyProxy, storage_options
from vfx_tasks.cli.enqueue import main as enqueue_main
from vfx_tasks.cli.export import main as export_main
from vfx_tasks.outputs.index import read_index
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.processes.cluster import LocalCluster
from vfx_tasks.settings import Settings
from vfx_tasks.storage import open_folder

#: The sample videos each run extracts, by relative id (small: the run is about storage, not models).
VIDEOS = {"top": "carphone_pristine.mp4", "sub/deep": "carphone_distorted.mp4", "sub/other": "bikes.mp4"}


def write_videos(folder: Path, sample_videos_dir: Path, ids: list[str] | None = None) -> Path:
    for relative_id in ids or VIDEOS:
        (folder / relative_id).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample_videos_dir / VIDEOS[relative_id], folder / f"{relative_id}.mp4")
    return folder


def upload_videos(s3: Any, bucket: str, prefix: str, folder: Path) -> None:
    for path in sorted(folder.rglob("*.mp4")):
        s3.upload(bucket, f"{prefix}/{path.relative_to(folder).as_posix()}", path)


def s3_array(s3: Any, bucket: str, key: str) -> np.ndarray:
    return np.load(io.BytesIO(s3.read(bucket, key)), allow_pickle=False)


def worker_env(s3_env: dict[str, str], queue_env: dict[str, str]) -> dict[str, str]:
    """What a worker gets beyond :func:`queue_env`: the credentials, endpoint and roots of the bucket."""
    return {key: value for key, value in s3_env.items() if queue_env.get(key) != value}


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=PROCESS_TIMEOUT_SECONDS + 60)
    return process.returncode, stderr


@pytest.mark.slow
def test_s3_to_s3_with_two_workers_equals_the_local_run(
    tmp_path: Path, sample_videos_dir: Path, s3_server: Any, s3_bucket: str, s3_env: dict[str, str],
    queue_env: dict[str, str], start_worker: Any,
) -> None:
    videos = write_videos(tmp_path / "videos", sample_videos_dir)
    upload_videos(s3_server, s3_bucket, "videos", videos)
    for _ in range(2):
        start_worker(**worker_env(s3_env, queue_env))
    # Given the same videos in a bucket and in a folder, when both are extracted by the same workers,
    remote = start_enqueue_wait(s3_env, "--input_dir", f"s3://{s3_bucket}/videos",
                                "--output_dir", f"s3://{s3_bucket}/features/")
    code, stderr = finish(remote)
    assert code == 0 and "3 done, 0 failed of 3" in stderr, stderr
    local = start_enqueue_wait(s3_env, "--input_dir", str(videos), "--output_dir", str(tmp_path / "features"))
    code, local_stderr = finish(local)
    assert code == 0, local_stderr
    # then every object holds the very array of the local file, beside a manifest and a whole index,
    keys = s3_server.keys(s3_bucket, "features/")
    assert keys == sorted(["features/index.csv", "features/vfx-run.json"]
                          + [f"features/{relative_id}.npy" for relative_id in VIDEOS])
    for relative_id in VIDEOS:
        expected = np.load(tmp_path / "features" / f"{relative_id}.npy")
        assert np.array_equal(s3_array(s3_server, s3_bucket, f"features/{relative_id}.npy"), expected)
    # (read as readers read them: a video's last row wins, should a redelivery have added one)
    options = {"endpoint_url": s3_server.endpoint_url}
    with open_folder(f"s3://{s3_bucket}/features", storage_options=options) as folder:
        assert read_index(folder) == read_index(tmp_path / "features") and len(read_index(folder)) == 3
    assert "Wrote s3://" in stderr and "index.csv (3 rows)" in stderr
    # and a rerun finds them done with one listing, queueing nothing.
    again = run_cli(ENQUEUE, "--input_dir", f"s3://{s3_bucket}/videos", "--output_dir",
                    f"s3://{s3_bucket}/features", *RUN_SPEC_OPTIONS, env=s3_env)
    assert again.returncode == 0 and "Queued 0 of 3" in again.stderr and "3 with valid output" in again.stderr
    status = run_cli("vfx_tasks.cli.status", "--output_dir", f"s3://{s3_bucket}/features", "--write-index",
                     env=s3_env)
    assert status.returncode == 0 and "3 feature files, 3 index rows" in status.stdout, status.stderr


@pytest.mark.slow
def test_local_to_s3_and_s3_to_local_and_exports_both_ways(
    tmp_path: Path, sample_videos_dir: Path, s3_server: Any, s3_bucket: str, s3_env: dict[str, str],
    queue_env: dict[str, str], start_worker: Any,
) -> None:
    videos = write_videos(tmp_path / "videos", sample_videos_dir, ["top", "sub/deep"])
    upload_videos(s3_server, s3_bucket, "in", videos)
    start_worker(**worker_env(s3_env, queue_env))
    # Given local videos written to a bucket by a worker, and videos in a bucket written to a folder
    # by a --local run (its own Redis and worker, the bucket's options handed over in the environment),
    to_s3 = start_enqueue_wait(s3_env, "--input_dir", str(videos), "--output_dir", f"s3://{s3_bucket}/out")
    to_local = start_enqueue({**s3_env, "VFX_BROKER_URL": ""}, "--input_dir", f"s3://{s3_bucket}/in",
                             "--output_dir", str(tmp_path / "out"), *RUN_SPEC_OPTIONS, "--local",
                             "--wait-timeout", str(PROCESS_TIMEOUT_SECONDS))
    for process in (to_s3, to_local):
        code, stderr = finish(process)
        assert code == 0 and "2 done, 0 failed of 2" in stderr, stderr
    # then both hold the same features,
    for relative_id in ("top", "sub/deep"):
        assert np.array_equal(s3_array(s3_server, s3_bucket, f"out/{relative_id}.npy"),
                              np.load(tmp_path / "out" / f"{relative_id}.npy"))
    # and vfx-export reads from a bucket into a folder, and from a folder into a bucket.
    env = {"VFX_STORAGE_OPTIONS": s3_env["VFX_STORAGE_OPTIONS"]}
    result = CliRunner().invoke(export_main, [f"s3://{s3_bucket}/out", str(tmp_path / "exported"),
                                              "--layout", "per-crop"], env=env)
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.load(tmp_path / "exported" / "sub" / "deep__0.npy"),
                          np.load(tmp_path / "out" / "sub" / "deep.npy")[:, 0, :])
    result = CliRunner().invoke(export_main, [str(tmp_path / "out"), f"s3://{s3_bucket}/exported",
                                              "--layout", "video"], env=env)
    assert result.exit_code == 0, result.output
    assert "exported/sub/deep.npy" in " ".join(s3_server.keys(s3_bucket, "exported/"))
    again = CliRunner().invoke(export_main, [str(tmp_path / "out"), f"s3://{s3_bucket}/exported",
                                             "--layout", "video"], env=env)
    assert again.exit_code == 0 and "0 written, 2 up to date" in again.output, again.output


@pytest.mark.slow
def test_an_object_deleted_after_the_listing_fails_as_not_found_and_the_others_finish(
    tmp_path: Path, sample_videos_dir: Path, s3_server: Any, s3_bucket: str, s3_env: dict[str, str],
    queue_env: dict[str, str], redis_url: str, start_worker: Any,
) -> None:
    upload_videos(s3_server, s3_bucket, "in", write_videos(tmp_path / "videos", sample_videos_dir,
                                                           ["top", "sub/deep"]))
    queued = run_cli(ENQUEUE, "--input_dir", f"s3://{s3_bucket}/in", "--output_dir", f"s3://{s3_bucket}/out",
                     *RUN_SPEC_OPTIONS, env=s3_env)
    assert queued.returncode == 0 and "Queued 2 of 2" in queued.stderr, queued.stderr
    # Given two videos queued, one of which is deleted before any worker fetches it,
    s3_server.client().delete_object(Bucket=s3_bucket, Key="in/sub/deep.mp4")
    start_worker(**worker_env(s3_env, queue_env))
    ledger = Ledger.from_url(redis_url)
    run = run_spec(f"s3://{s3_bucket}/out")  # type: ignore[arg-type]
    counts = wait_until(lambda: (c := ledger.counts(run.run_id)).done + c.failed == 2 and c,
                        "both videos to end")
    # then that one fails at once as not_found, with what to do, and the other is done.
    assert (counts.done, counts.failed) == (1, 1)
    reason = ledger.entries(run.run_id, "failed")["sub/deep"]
    assert reason["code"] == "not_found" and "deleted or moved after it was listed" in reason["message"]
    assert s3_server.keys(s3_bucket, "out/top") == ["out/top.npy"]


@pytest.mark.slow
def test_a_run_resumes_after_its_worker_is_killed(
    tmp_path: Path, sample_videos_dir: Path, s3_server: Any, s3_bucket: str, s3_env: dict[str, str],
    queue_env: dict[str, str], redis_url: str, start_worker: Any,
) -> None:
    folder = tmp_path / "videos"
    for index in range(3):
        folder.mkdir(exist_ok=True)
        shutil.copy(sample_videos_dir / "bikes.mp4", folder / f"v{index}.mp4")
    upload_videos(s3_server, s3_bucket, "in", folder)
    extra = worker_env(s3_env, queue_env)
    worker = start_worker(name="s3worker@%h", **extra)
    # (every clip of each video: seconds of work each, so that the kill finds one in flight)
    run = start_enqueue_wait(s3_env, "--input_dir", f"s3://{s3_bucket}/in", "--output_dir",
                             f"s3://{s3_bucket}/out", "--num_clips_per_video", "-1")
    ledger, run_id = Ledger.from_url(redis_url), run_spec(  # type: ignore[arg-type]
        f"s3://{s3_bucket}/out", num_clips_per_video=-1).run_id
    # Given a run whose worker has written its first object and is running the next video,
    wait_until(lambda: ledger.counts(run_id).done >= 1 and ledger.entries(run_id, "running"),
               "a first output and a video in flight")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.process.wait(30)
    restarted = start_worker(name="s3worker@%h", **extra)
    # then it takes back the video in flight at once, and the same --wait ends with every video
    # done, each output complete.
    code, stderr = finish(run)
    assert code == 0 and "3 done, 0 failed of 3" in stderr, stderr
    assert "Requeued 1 video(s) that an earlier run of s3worker@" in restarted.log(), restarted.log()
    for index in range(3):
        assert s3_array(s3_server, s3_bucket, f"out/v{index}.npy").shape == (4, 1, 2048)


@pytest.mark.slow
def test_a_throttling_endpoint_is_ridden_out(
    tmp_path: Path, sample_videos_dir: Path, s3_server: Any, s3_bucket: str, s3_env: dict[str, str],
    queue_env: dict[str, str], start_worker: Any,
) -> None:
    upload_videos(s3_server, s3_bucket, "in", write_videos(tmp_path / "videos", sample_videos_dir, ["top"]))
    # Given an endpoint that answers 503 SlowDown to its first 3 requests and then to every 4th,
    with FaultyProxy(s3_server.port, fail_first=3, fail_every=4) as proxy:
        env = {**s3_env, "VFX_STORAGE_OPTIONS": storage_options(proxy.endpoint_url)}
        start_worker(**worker_env(env, queue_env))
        # when a run lists, fetches and writes through it,
        code, stderr = finish(start_enqueue_wait(env, "--input_dir", f"s3://{s3_bucket}/in", "--output_dir",
                                                 f"s3://{s3_bucket}/out"))
    # then it ends as if nothing had failed: the failures were retried.
    assert code == 0 and "1 done, 0 failed of 1" in stderr, stderr
    assert proxy.failed >= 4 and proxy.requests > proxy.failed
    assert s3_array(s3_server, s3_bucket, "out/top.npy").shape == (1, 1, 2048)


def moto_with_authentication() -> tuple[subprocess.Popen[bytes], str]:
    """A moto server (its own process) that checks credentials: unknown access keys are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.1)


def test_a_bucket_without_access_stops_the_run_before_anything_is_queued(
    tmp_path: Path, sample_videos_dir: Path, s3_server: Any, s3_bucket: str, redis_url: str,
) -> None:
    videos = write_videos(tmp_path / "videos", sample_videos_dir, ["top"])
    env = {"VFX_BROKER_URL": redis_url, "VFX_STORAGE_OPTIONS": storage_options(s3_server.endpoint_url)}
    runner = CliRunner()
    # Given an output bucket and an input bucket that do not exist,
    missing_out = runner.invoke(enqueue_main, ["--input_dir", str(videos), "--output_dir", "s3://no-such-bkt/out",
                                               *RUN_SPEC_OPTIONS], env=env)
    missing_in = runner.invoke(enqueue_main, ["--input_dir", "s3://no-such-bkt/in", "--output_dir",
                                              f"s3://{s3_bucket}/out", *RUN_SPEC_OPTIONS], env=env)
    # and credentials that the store refuses,
    server, endpoint = moto_with_authentication()
    try:
        refused = runner.invoke(enqueue_main, ["--input_dir", str(videos), "--output_dir", "s3://any/out",
                                               *RUN_SPEC_OPTIONS],
                                env={**env, "VFX_STORAGE_OPTIONS": storage_options(endpoint)})
    finally:
        server.terminate()
        server.wait(10)
    # then each run stops with exit 2 and a message that says what to check, and queues nothing.
    for result in (missing_out, missing_in):
        assert result.exit_code == 2 and "the bucket does not exist" in result.output, result.output
    assert refused.exit_code == 2, refused.output
    assert "Access denied" in refused.output and "AWS_ACCESS_KEY_ID" in refused.output
    assert Ledger.from_url(redis_url).runs() == []


def test_local_workers_get_the_bucket_and_its_secrets_through_their_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    settings = Settings.from_env({}, device="cpu", storage_options='{"endpoint_url": "http://minio:9000", '
                                                                    '"secret": "options-secret-value"}')
    cluster = LocalCluster(settings, output_dir="s3://bucket/features/", input_dir="s3://bucket/videos")
    try:
        command, environ = cluster.worker_launch(0, None)
    finally:
        shutil.rmtree(cluster.log_dir)
    # The roots are this run's prefixes, the options and credentials are in the environment,
    assert environ["VFX_INPUT_ROOTS"] == "s3://bucket/videos"
    assert environ["VFX_OUTPUT_ROOTS"] == "s3://bucket/features"
    assert "options-secret-value" in environ["VFX_STORAGE_OPTIONS"]
    assert environ["AWS_SECRET_ACCESS_KEY"] == "aws-secret-value"
    # and nothing of them is on the command line, which every user of the machine can read.
    assert not any("secret-value" in part or "minio" in part for part in command)
