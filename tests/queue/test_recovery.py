"""Workers take back what they hold but do not run: a dead predecessor's tasks, those a lost link cut."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import redis

from tests.conftest import WorkerProcess, run_spec
from tests.queue.helpers import HELD_QUEUE, hold_unacknowledged, wait_until_answering
from vfx_tasks.queue.app import create_app
from vfx_tasks.queue.job import Job
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.recovery.held import find_held_by
from vfx_tasks.queue.recovery.internals import iter_unacked
from vfx_tasks.queue.recovery.orphans import requeue_orphaned_tasks
from vfx_tasks.queue.recovery.reconciler import Reconciler, held_task
from vfx_tasks.settings import Settings


def test_only_videos_of_a_dead_worker_of_the_same_name_go_back(
    redis_url: str, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    app = create_app(Settings.from_env({}, broker_url=redis_url, queue_name=HELD_QUEUE))
    ledger, run = Ledger.from_url(redis_url), run_spec(tmp_path)
    ledger.register_run(run)
    live = f"test0@{socket.gethostname()}"
    # Given a live worker (up and answering), and three unacknowledged tasks: one the ledger shows
    # running on a worker that is gone, one on the live worker, one on no worker the ledger knows,
    worker = start_worker()
    wait_until_answering(app, live, worker)
    held = []
    for relative_id, runner in [("lost", "gone@box"), ("busy", live), ("other", None)]:
        held.append(hold_unacknowledged(redis_url, run, relative_id))
        if runner:
            ledger.mark_started(run.run_id, relative_id, runner)
    client = redis.Redis.from_url(redis_url)
    assert client.hlen("unacked") == 3
    # when a worker named like the live one starts, it finds that video but takes nothing back,
    assert [o.relative_id for o in find_held_by(app, ledger, {live})] == ["busy"]
    assert requeue_orphaned_tasks(app, ledger, live) == []
    assert client.hlen("unacked") == 3
    # and when one named like the gone worker starts, exactly its video goes back to the queue.
    requeued = requeue_orphaned_tasks(app, ledger, "gone@box")
    assert [(o.run_id, o.relative_id) for o in requeued] == [(run.run_id, "lost")]
    assert client.hlen("unacked") == 2
    assert client.llen(HELD_QUEUE) == 1
    for connection in held:  # the "dead" consumers' connections: closing gives their tasks back
        connection.release()


def test_a_live_worker_requeues_what_it_no_longer_runs_but_could_not_acknowledge(
    redis_url: str, tmp_path: Path
) -> None:
    app = create_app(Settings.from_env({}, broker_url=redis_url, queue_name=HELD_QUEUE))
    ledger, run = Ledger.from_url(redis_url), run_spec(tmp_path)
    client = redis.Redis.from_url(redis_url)
    # Given three deliveries this worker received: one it still runs, one its lost connection cut
    # off (no longer running, never acknowledged), one it finished and acknowledged,
    relative_ids = ("busy", "cut", "done")
    connections = [hold_unacknowledged(redis_url, run, relative_id) for relative_id in relative_ids]
    by_task_id = {run.task_id(relative_id): relative_id for relative_id in ("busy", "cut", "done")}
    tags = {by_task_id[message.task_id]: message.delivery_tag for message in iter_unacked(app)}
    ledger.mark_started(run.run_id, "cut", "me@box")
    in_flight = {tags["busy"]}
    reconciler = Reconciler(app, "me@box", ledger_url=redis_url, in_flight=lambda: in_flight)
    for relative_id, tag in tags.items():
        job = Job.create(run, relative_id=relative_id, video_path="/nowhere.mp4")
        reconciler.received(held_task(tag, job.to_message()))
    client.hdel("unacked", tags["done"])
    # when it reconciles, the first pass only suspects the cut-off one (an acknowledgement may be on its way),
    assert reconciler.reconcile() == []
    assert client.llen(HELD_QUEUE) == 0
    # and the second puts it back on the queue, forgetting its attempt (the video was not at fault);
    assert [task.relative_id for task in reconciler.reconcile()] == ["cut"]
    assert client.llen(HELD_QUEUE) == 1 and client.hexists("unacked", tags["busy"])
    assert ledger.entries(run.run_id, "running") == {} and ledger.entries(run.run_id, "deliveries") == {}
    # nothing else is touched on later passes.
    assert reconciler.reconcile() == [] and client.llen(HELD_QUEUE) == 1
    for connection in connections:
        connection.release()
