"""Deliveries nobody will settle go back to the queue: a dead predecessor's, those a lost link cut,
those received and never started; deliveries a live process holds are left alone."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import WorkerProcess, run_spec
from tests.queue.helpers import HELD_QUEUE, hold_unacknowledged, take_without_ack, wait_until_answering
from vfx_tasks.queue.app import create_app
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.recovery.holders import Holders
from vfx_tasks.queue.recovery.internals import restore_unchanged, unacked_deliveries
from vfx_tasks.queue.recovery.orphans import requeue_orphaned_tasks
from vfx_tasks.queue.recovery.reconciler import Reconciler
from vfx_tasks.queue.recovery.sweeper import Sweeper
from vfx_tasks.settings import Settings

GRACE = 15.0


@pytest.fixture
def holding(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Takes a video's task without acknowledging it (see above); returns its delivery tag."""
    run = run_spec(tmp_path)
    app = create_app(Settings.from_env({}, broker_url=redis_url, queue_name=HELD_QUEUE))
    connections = []

    def hold(relative_id: str, *, queue: str = HELD_QUEUE, task_id: str | None = None) -> str:
        connections.append(hold_unacknowledged(redis_url, run, relative_id, queue=queue, task_id=task_id))
        wanted = task_id or run.task_id(relative_id)
        (tag,) = [d.delivery_tag for d in unacked_deliveries(app) if d.task_id == wanted]
        return tag

    yield hold
    for connection in connections:  # the "dead" consumers' connections: closing gives their tasks back
        connection.release()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_delivery_no_live_process_holds_goes_back_after_the_grace(
    redis_url: str, tmp_path: Path, holding: Callable[..., str]
) -> None:
    app = create_app(Settings.from_env({}, broker_url=redis_url, queue_name=HELD_QUEUE))
    ledger, holders, run = Ledger.from_url(redis_url), Holders.from_url(redis_url), run_spec(tmp_path)
    ledger.register_run(run)
    client = redis.Redis.from_url(redis_url)
    # Given deliveries of the queue: one a live process holds; one running on that live worker,
    # which no longer holds it (its connection broke and Celery cancelled it); one running on a
    # worker that has no record (dead); one nobody ever started (a dead worker had received it);
    # and one of another queue, not this worker's business,
    tags = {relative_id: holding(relative_id) for relative_id in ("held", "cut", "dead", "waiting")}
    other_queue = holding("elsewhere", queue="other")
    # and one forged with the held video's arguments under another task id,
    forged = holding("held", task_id=str(uuid.uuid4()))
    holders.write("me-1", "me@box", {tags["held"]: run.task_id("held")}, ttl_seconds=60)
    for relative_id, worker in [("held", "me@box"), ("cut", "me@box"), ("dead", "gone@box")]:
        ledger.mark_started(run.run_id, relative_id, worker)
    clock = Clock()
    sweeper = Sweeper(app, queue=HELD_QUEUE, grace_seconds=GRACE, clock=clock)
    # when a live worker sweeps, nothing goes back before the deliveries have been held by no
    # live process for the grace (a worker records what it takes a moment after taking it),
    assert sweeper.sweep(ledger, holders) == []
    clock.now = GRACE - 0.1
    assert sweeper.sweep(ledger, holders) == []
    assert client.llen(HELD_QUEUE) == 0
    # and then the three nobody holds go back to the queue,
    clock.now = GRACE
    restored = {d.delivery_tag for d in sweeper.sweep(ledger, holders)}
    assert restored == {tags["cut"], tags["dead"], tags["waiting"], forged}
    assert client.llen(HELD_QUEUE) == 4 and client.hexists("unacked", tags["held"])
    assert client.hexists("unacked", other_queue)
    # their running entries released: the cut-off attempt not counted, the dead worker's counted
    # as a death, both marked as possibly cut off mid-write; the held video left as it was (a
    # video is found by its task id, never by what a message says).
    assert ledger.entries(run.run_id, "running") == {"held": "me@box"}
    assert ledger.entries(run.run_id, "deliveries") == {"held": "1", "dead": "1"}
    assert ledger.take_interrupted(run.run_id, "cut") and ledger.take_interrupted(run.run_id, "dead")
    clock.now = 3 * GRACE
    assert sweeper.sweep(ledger, holders) == []


def test_a_delivery_taken_again_meanwhile_is_left_to_its_new_holder(
    redis_url: str, tmp_path: Path, holding: Callable[..., str]
) -> None:
    app = create_app(Settings.from_env({}, broker_url=redis_url, queue_name=HELD_QUEUE))
    ledger, holders, run = Ledger.from_url(redis_url), Holders.from_url(redis_url), run_spec(tmp_path)
    client = redis.Redis.from_url(redis_url)
    clock = Clock()
    sweeper = Sweeper(app, queue=HELD_QUEUE, grace_seconds=GRACE, clock=clock)
    # Given a delivery this sweeper has seen held by nobody,
    tag = holding("v")
    assert sweeper.sweep(ledger, holders) == []
    # which someone else puts back and a consumer takes again (same tag, delivered anew) and is
    # about to record,
    (seen,) = unacked_deliveries(app)
    assert restore_unchanged(app, [seen]) == [seen]
    with app.connection_for_read() as again:
        take_without_ack(again, HELD_QUEUE)
        # when the sweeper looks past the grace of the first delivery, the new one is not due,
        clock.now = GRACE
        assert sweeper.sweep(ledger, holders) == []
        assert client.hexists("unacked", tag) and client.llen(HELD_QUEUE) == 0
        # and once recorded it stays with its holder however long it runs.
        holders.write("new-1", "new@box", {tag: run.task_id("v")}, ttl_seconds=60)
        clock.now = 10 * GRACE
        assert sweeper.sweep(ledger, holders) == []
        assert client.hexists("unacked", tag)


def test_a_record_says_what_its_process_holds_until_it_stops_writing(redis_url: str) -> None:
    app = create_app(Settings.from_env({}, broker_url=redis_url, queue_name=HELD_QUEUE))
    holders = Holders.from_url(redis_url)
    in_flight = {"running-tag": "task-1"}
    reconciler = Reconciler(
        app, "me@box", redis_url=redis_url, queue=HELD_QUEUE, in_flight=lambda: in_flight, ttl_seconds=1
    )
    # A delivery just received is recorded with those Celery has in flight,
    reconciler.received("new-tag", "task-2")
    reconciler.write_record()
    (record,) = holders.live().values()
    assert record.worker == "me@box"
    assert dict(record.deliveries) == {"running-tag": "task-1", "new-tag": "task-2"}
    # what Celery no longer has leaves the record at the next write,
    in_flight.clear()
    reconciler.write_record()
    assert [dict(r.deliveries) for r in holders.live().values()] == [{}]
    # and a process that stops writing holds nothing once its record expires.
    time.sleep(1.5)
    assert holders.live() == {}
    assert redis.Redis.from_url(redis_url).hlen("vfx:holders") == 0


def test_only_what_dead_earlier_processes_of_the_same_name_held_goes_back(
    redis_url: str, start_worker: Callable[..., WorkerProcess], tmp_path: Path, holding: Callable[..., str]
) -> None:
    app = create_app(Settings.from_env({}, broker_url=redis_url, queue_name=HELD_QUEUE))
    ledger, holders, run = Ledger.from_url(redis_url), Holders.from_url(redis_url), run_spec(tmp_path)
    ledger.register_run(run)
    live = f"test0@{socket.gethostname()}"
    # Given a live worker (up and answering), and unacknowledged tasks: one the ledger shows
    # running on a worker that is gone, one an earlier process of that worker had received and
    # not started (only its record knows), one on the live worker, one on no worker at all,
    wait_until_answering(app, live, start_worker())
    tags = {relative_id: holding(relative_id) for relative_id in ("lost", "waiting", "busy", "other")}
    ledger.mark_started(run.run_id, "lost", "gone@box")
    ledger.mark_started(run.run_id, "busy", live)
    holders.write("gone-0", "gone@box", {tags["waiting"]: run.task_id("waiting")}, ttl_seconds=60)
    client = redis.Redis.from_url(redis_url)
    # when a worker named like the live one starts, it takes nothing back (that one answers),
    assert requeue_orphaned_tasks(app, ledger, holders, live, incarnation="new-1") == []
    assert client.hlen("unacked") == 4
    # and when one named like the gone worker starts, exactly its two go back to the queue,
    requeued = requeue_orphaned_tasks(app, ledger, holders, "gone@box", incarnation="new-2")
    assert {d.delivery_tag for d in requeued} == {tags["lost"], tags["waiting"]}
    assert client.hlen("unacked") == 2 and client.llen(HELD_QUEUE) == 2
    # the running one released as a death, and the dead process's record dropped.
    assert ledger.entries(run.run_id, "running") == {"busy": live}
    assert ledger.entries(run.run_id, "deliveries") == {"lost": "1", "busy": "1"}
    assert all(h.worker != "gone@box" for h in holders.live().values())
