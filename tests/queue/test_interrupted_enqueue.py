"""Claims and messages cannot diverge: lost messages, killed and interrupted producers, duplicates.

Most tests queue empty ``.mp4`` files with no worker running and inspect Redis: the queue list
(``vfx``), kombu's ``unacked`` hash and the ledger. The last runs a real worker on a real video.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.conftest import (
    PROCESS_TIMEOUT_SECONDS,
    WorkerProcess,
    run_cli,
    run_spec,
    wait_until,
    write_test_video,
)
from tests.helpers import ENQUEUE, enqueue_in_process, start_enqueue, write_fake_videos
from vfx_tasks.queue.app import create_app
from vfx_tasks.queue.job import Run
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.producer.enqueue import enqueue_videos
from vfx_tasks.settings import Settings
from vfx_tasks.sources.base import VideoItem

COMMON = ["--model", "i3d", "--crop_type", "center", "--num_clips_per_video", "1"]
QUEUE = "vfx"


def fake_videos(root: Path, count: int) -> list[str]:
    """``count`` empty video files in ten folders; their relative ids."""
    return write_fake_videos(root, (f"d{index % 10}/v{index}.mp4" for index in range(count)))


def message_task_ids(client: redis.Redis) -> list[str]:
    """Task ids of every message in the queue list and in the unacknowledged hash (repeats kept)."""
    waiting = [json.loads(raw)["headers"]["id"] for raw in client.lrange(QUEUE, 0, -1)]
    held = [json.loads(raw)[0]["headers"]["id"] for raw in client.hvals("unacked")]
    return waiting + held


def pending(client: redis.Redis, run: Run) -> int:
    return int(client.hlen(f"vfx:run:{run.run_id}:pending"))


def test_a_rerun_sends_again_every_claimed_video_whose_message_was_lost(
    redis_url: str, tmp_path: Path
) -> None:
    ids = fake_videos(tmp_path / "in", 30)
    out = tmp_path / "out"
    run = run_spec(out)
    args = ["--input_dir", str(tmp_path / "in"), "--output_dir", str(out), *COMMON]
    assert "Queued 30 of 30" in enqueue_in_process(redis_url, *args).output
    client = redis.Redis.from_url(redis_url)
    # Given Redis came back without the last 20 messages but with all 30 claims (the 10 newest
    # messages kept), a worker holding 5 of those 10 unacknowledged, and one of the lost videos
    # running on a worker,
    client.ltrim(QUEUE, 0, 9)
    for index in range(5):
        message = json.loads(client.rpop(QUEUE))
        client.hset("unacked", f"tag-{index}", json.dumps([message, "", QUEUE]))
    kept = set(message_task_ids(client))
    lost = [r for r in ids if run.task_id(r) not in kept]
    Ledger.from_url(redis_url).mark_started(run.run_id, lost[0], "gpu0@elsewhere")
    # when the same command runs again,
    rerun = enqueue_in_process(redis_url, *args)
    # then it sends the 19 lost videos again, and only those: each video not running has one message.
    assert rerun.exit_code == 0, rerun.output
    assert "Queued 19 of 30 videos (19 sent again" in rerun.output
    assert "11 were already queued" in rerun.output
    messages = message_task_ids(client)
    assert sorted(messages) == sorted(run.task_id(r) for r in ids if r != lost[0])
    # And a third run finds nothing missing: reruns never pile up duplicates.
    third = enqueue_in_process(redis_url, *args)
    assert "Queued 0 of 30" in third.output and "30 were already queued" in third.output
    assert len(message_task_ids(client)) == 29


def test_a_producer_killed_between_claims_and_messages_loses_nothing(
    redis_url: str, queue_env: dict[str, str], tmp_path: Path
) -> None:
    ids = fake_videos(tmp_path / "in", 2000)
    out = tmp_path / "out"
    run = run_spec(out)
    args = ["--input_dir", str(tmp_path / "in"), "--output_dir", str(out), *COMMON]
    client = redis.Redis.from_url(redis_url)
    # Given a producer killed with SIGKILL after claiming videos and before their messages were
    # written (Redis pauses writes the moment the first claims appear, so it cannot flush),
    producer = start_enqueue(queue_env, *args)
    try:
        wait_until(lambda: pending(client, run) > 0, "the producer's first claims", timeout=60)
        client.client_pause(10_000, all=False)
        producer.kill()
        producer.wait(PROCESS_TIMEOUT_SECONDS)
    finally:
        client.client_unpause()
        producer.kill()
    claimed, messages = pending(client, run), client.llen(QUEUE)
    assert claimed > messages, f"the kill came too late: {claimed} claims, {messages} messages"
    # when the same command runs again,
    rerun = enqueue_in_process(redis_url, *args)
    # then every video that is not done has exactly one message.
    assert rerun.exit_code == 0, rerun.output
    assert sorted(message_task_ids(client)) == sorted(run.task_id(r) for r in ids)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_enqueue_says_what_it_queued_and_the_rerun_queues_the_rest(
    redis_url: str, queue_env: dict[str, str], tmp_path: Path, signum: int
) -> None:
    ids = fake_videos(tmp_path / "in", 4000)
    out = tmp_path / "out"
    run = run_spec(out)
    args = ["--input_dir", str(tmp_path / "in"), "--output_dir", str(out), *COMMON]
    client = redis.Redis.from_url(redis_url)
    # Given a producer interrupted once it has claimed its first videos,
    producer = start_enqueue(queue_env, *args)
    try:
        wait_until(lambda: pending(client, run) > 0, "the producer's first claims", timeout=60)
        producer.send_signal(signum)
        _, stderr = producer.communicate(timeout=PROCESS_TIMEOUT_SECONDS)
    finally:
        producer.kill()
    # then it says how many it queued and exits 130, with a message for every claim,
    assert producer.returncode == 130, stderr
    assert "Interrupted after queueing" in stderr and "run the same command again" in stderr
    assert "Traceback" not in stderr
    assert client.llen(QUEUE) == pending(client, run)
    # and the same command again queues the rest, each video once.
    rerun = enqueue_in_process(redis_url, *args)
    assert rerun.exit_code == 0, rerun.output
    assert sorted(message_task_ids(client)) == sorted(run.task_id(r) for r in ids)


def succeeded_lines(worker: WorkerProcess, task_id: str) -> int:
    return sum(f"[{task_id}] succeeded" in line for line in worker.log().splitlines())


@pytest.mark.slow
def test_a_duplicate_message_for_a_done_video_is_acknowledged_without_work(
    redis_url: str, queue_env: dict[str, str], tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    video = write_test_video(tmp_path / "in" / "clip.mp4", width=96, height=64, num_frames=40)
    out = tmp_path / "out"
    run = run_spec(out)
    task_id = run.task_id("clip")
    worker = start_worker()
    # Given a video extracted and recorded as done,
    args = ["--input_dir", str(video.parent), "--output_dir", str(out), *COMMON, "--poll_seconds", "0.2"]
    first = run_cli(ENQUEUE, *args, "--wait", "--wait-timeout", "120", env=queue_env)
    assert first.returncode == 0, first.stderr
    wait_until(lambda: succeeded_lines(worker, task_id) == 1, "the first task to be logged")
    output = out / "clip.npy"
    before = output.stat()
    ledger = Ledger.from_url(redis_url)
    done_before = ledger.entries(run.run_id, "done")
    # when a second message for it arrives (a producer that planned before the video ended),
    app = create_app(Settings.from_env(broker_url=redis_url), producer_only=True)
    sent = enqueue_videos(app, ledger, run, [VideoItem("clip", str(video))])
    assert sent.queued == ["clip"]
    wait_until(lambda: succeeded_lines(worker, task_id) == 2, "the duplicate to be acknowledged")
    # then the worker acknowledges it without computing or writing the output again,
    assert "already done with a valid output" in worker.log()
    after = output.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # and the ledger is as before: done once, nothing queued, no attempt counted.
    assert ledger.entries(run.run_id, "done") == done_before
    counts = ledger.counts(run.run_id)
    assert (counts.queued, counts.running, counts.done) == (0, 0, 1)
    assert ledger.entries(run.run_id, "deliveries") == {}
