"""The run ledger on a real Redis: claims, attempts, terminal states, deterministic ids."""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import I3D, RestartableRedis
from vfx_tasks.errors import BrokerBusyError, BrokerUnavailableError, TransientError
from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.queue.job import Run
from vfx_tasks.queue.ledger import MAX_REFUSALS, Ledger
from vfx_tasks.queue.processes.redis_server import free_port


def make_run(output_dir: Path, **overrides: object) -> Run:
    values: dict[str, object] = dict(
        model=I3D, crop_type="center", num_clips_per_video=1, clip_sampling="sequential", precision="fp32"
    )
    values.update(overrides)
    return Run.create(output_dir, Recipe(**values))  # type: ignore[arg-type]


def test_ids_are_deterministic_and_depend_on_every_setting(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    assert make_run(tmp_path).task_id("a/v") == run.task_id("a/v")
    assert run.task_id("a/v") != run.task_id("a/w")
    assert make_run(tmp_path, crop_type="5-crop").run_id != run.run_id
    assert make_run(tmp_path, precision="fp16").run_id != run.run_id
    assert make_run(tmp_path / "other").run_id != run.run_id
    assert make_run(tmp_path, decoder="pyav").run_id != run.run_id
    # Neither an alias for the model nor the batch size (which does not change the features) does.
    assert make_run(tmp_path, model="i3d", batch_size=4).run_id == run.run_id


def test_runs_from_before_the_decoder_choice_keep_their_ids(tmp_path: Path) -> None:
    # decord, the default, is left out of the id: ledgers and messages of earlier runs still match.
    assert make_run(tmp_path, decoder="decord").run_id == make_run(tmp_path).run_id
    fields = {"output_dir": str(tmp_path.resolve()), "model": I3D, "crop_type": "center",
              "num_clips_per_video": 1, "clip_sampling": "sequential", "precision": "fp32"}  # fmt: skip
    payload = json.dumps(fields, sort_keys=True)
    assert make_run(tmp_path).run_id == hashlib.sha256(payload.encode()).hexdigest()[:20]


def test_two_producers_claim_each_video_once(redis_url: str, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    first, second = Ledger.from_url(redis_url), Ledger.from_url(redis_url)
    assert first.claim(run, ["a", "b"]) == [True, True]
    assert second.claim(run, ["b", "c"]) == [False, True]
    assert second.claim(run, ["b"], force=True) == [True]
    assert first.counts(run.run_id).queued == 3


def test_a_failed_video_counts_as_requested_again_only_once_claimed_again(
    redis_url: str, tmp_path: Path
) -> None:
    run = make_run(tmp_path)
    ledger = Ledger.from_url(redis_url)
    ledger.claim(run, ["v"])
    ledger.mark_started(run.run_id, "v", "w1")
    assert not ledger.failed_since_queued(run.run_id, "v")  # running: its message is the request
    ledger.mark_failed(run.run_id, "v", {"code": "timeout", "message": "m"})
    assert ledger.failed_since_queued(run.run_id, "v")  # a message now is a stale redelivery
    assert ledger.claim(run, ["v"]) == [True]  # a rerun of vfx-enqueue queues it again
    assert not ledger.failed_since_queued(run.run_id, "v")


def test_lifecycle_counts_attempts_until_the_video_ends(redis_url: str, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    ledger = Ledger.from_url(redis_url)
    ledger.claim(run, ["v", "w"])
    assert ledger.mark_started(run.run_id, "v", "w1") == 1
    assert ledger.counts(run.run_id).running == 1
    # The worker died; the redelivered task starts again and sees the earlier attempt.
    assert ledger.mark_started(run.run_id, "v", "w2") == 2
    ledger.mark_done(run.run_id, "v", {"shape": [1, 1, 8]})
    ledger.mark_started(run.run_id, "w", "w2")
    ledger.mark_retrying(run.run_id, "w")
    assert ledger.mark_started(run.run_id, "w", "w2") == 1  # a retry is not a death
    ledger.mark_failed(run.run_id, "w", {"code": "bad_video", "message": "broken"})
    counts = ledger.counts(run.run_id)
    assert (counts.queued, counts.running, counts.done, counts.failed) == (0, 0, 1, 1)
    assert ledger.entries(run.run_id, "failed") == {"w": {"code": "bad_video", "message": "broken"}}
    assert ledger.entries(run.run_id, "deliveries") == {}
    # A finished video can be claimed again (e.g. after its output was deleted).
    assert ledger.claim(run, ["v"]) == [True]


def test_an_attempt_stopped_from_outside_is_told_to_the_next_one(redis_url: str, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    ledger = Ledger.from_url(redis_url)
    ledger.claim(run, ["cut", "died", "other"])
    for relative_id in ("cut", "died"):
        ledger.mark_started(run.run_id, relative_id, "w1")
    # An attempt released because its connection broke is forgotten (not a death), one whose
    # worker died stays counted; both may have been cut off mid-write, and the next attempt is told once.
    assert ledger.release_attempt(run.run_id, "cut", "w1")
    assert ledger.release_attempt(run.run_id, "died", "w1", died=True)
    assert not ledger.release_attempt(run.run_id, "other", "w1")  # not running there: nothing changes
    assert ledger.entries(run.run_id, "running") == {}
    assert ledger.entries(run.run_id, "deliveries") == {"died": "1"}
    assert ledger.take_interrupted(run.run_id, "cut") and not ledger.take_interrupted(run.run_id, "cut")
    assert not ledger.take_interrupted(run.run_id, "other")
    # The mark goes when the video ends.
    ledger.mark_done(run.run_id, "died", {"shape": [1, 1, 8]})
    assert not ledger.take_interrupted(run.run_id, "died")


def test_unreachable_redis_is_a_clear_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(BrokerUnavailableError, match=f"Cannot reach Redis at {url}.*--local"):
        Ledger.from_url(url)


@pytest.fixture
def full_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    """A Redis at its memory limit that evicts nothing: it refuses every write that needs memory."""
    server = RestartableRedis(
        tmp_path / "full", extra_args=("--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
    )
    server.start()
    client = redis.Redis.from_url(server.url)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for i in range(10_000):
            client.set(f"filler:{i}", "x" * 10_000)
    yield server
    server.stop()


def test_redis_out_of_memory_is_a_transient_error(full_redis: RestartableRedis) -> None:
    # Given a Redis that is out of memory, a ledger write raises our transient error (retried by
    # the task; exit code 2 at a command's start), not a raw redis-py exception,
    ledger = Ledger.from_url(full_redis.url)
    with pytest.raises(BrokerBusyError, match="out of memory .*raise its maxmemory") as raised:
        ledger.mark_started("run", "v" * 5000, "worker")
    assert isinstance(raised.value, TransientError)
    # while reads still work.
    assert ledger.counts("run").running == 0


def test_read_only_redis_is_a_transient_error(restartable_redis: RestartableRedis, tmp_path: Path) -> None:
    # Given a read-only replica (a failover in progress, or the wrong URL), a write is a transient error.
    replica = RestartableRedis(
        tmp_path / "replica", extra_args=("--replicaof", "127.0.0.1", str(restartable_redis.port))
    )
    replica.start()
    try:
        with pytest.raises(BrokerBusyError, match="read-only replica: point VFX_BROKER_URL at the primary"):
            Ledger.from_url(replica.url).mark_started("run", "v", "worker")
    finally:
        replica.stop(signal.SIGKILL)


def test_refused_messages_are_kept_apart_and_bounded_and_never_undo_a_done_video(
    redis_url: str, tmp_path: Path
) -> None:
    ledger = Ledger.from_url(redis_url)
    run = make_run(tmp_path)
    ledger.register_run(run)
    ledger.claim(run, ["queued", "done"])
    ledger.mark_done(run.run_id, "done", {"shape": [1, 1, 2048]})
    reason = {"code": "untrusted_message", "message": "Refusing task: ..."}
    # A refusal is filed as a video's failure (no longer queued), but never over its done entry;
    assert ledger.mark_refused(run.run_id, "queued", reason)
    assert not ledger.mark_refused(run.run_id, "done", reason)
    assert set(ledger.entries(run.run_id, "failed")) == {"queued"}
    assert set(ledger.entries(run.run_id, "done")) == {"done"}
    assert ledger.entries(run.run_id, "pending") == {}
    # the refused messages themselves are kept apart, the newest first, at most MAX_REFUSALS of them.
    for index in range(MAX_REFUSALS + 5):
        ledger.record_refusal({"task_id": str(index), "code": "untrusted_message"})
    count, last = ledger.refusals()
    assert count == MAX_REFUSALS + 5 and len(last) == MAX_REFUSALS
    assert last[0]["task_id"] == str(MAX_REFUSALS + 4)
