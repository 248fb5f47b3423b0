"""A starting worker takes back what its dead predecessor held, and only that (real Redis and worker)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import redis
from kombu import Connection

from tests.conftest import WorkerProcess
from vfx_tasks.queue.app import EXTRACT_VIDEO_TASK, create_app
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.recovery import find_orphaned_tasks, requeue_orphaned_tasks
from vfx_tasks.settings import Settings

#: A queue no worker of these tests consumes: messages sent there stay where the test puts them.
HELD_QUEUE = "held"


def hold_unacknowledged(redis_url: str, run_id: str, relative_id: str) -> Connection:
    """Send a task and take it off the queue without acknowledging it, as a worker that died would.

    Returns the open connection: closing it would give the task back, as a worker that stops does.
    """
    app = create_app(Settings.from_env({}, broker_url=redis_url, queue_name=HELD_QUEUE))
    app.send_task(EXTRACT_VIDEO_TASK, kwargs={"run_id": run_id, "relative_id": relative_id})
    connection = app.connection_for_read()
    channel = connection.default_channel
    deadline = time.monotonic() + 10
    while channel.basic_get(HELD_QUEUE, no_ack=False) is None:
        assert time.monotonic() < deadline, "the task never reached the queue"
        time.sleep(0.05)
    return connection


def test_only_videos_of_a_dead_worker_of_the_same_name_go_back(
    redis_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    app = create_app(Settings.from_env({}, broker_url=redis_url, queue_name=HELD_QUEUE))
    ledger = Ledger.from_url(redis_url)
    live = f"test0@{socket.gethostname()}"
    # Given a live worker (up and answering), and three unacknowledged tasks: one the ledger shows
    # running on a worker that is gone, one on the live worker, one on no worker the ledger knows,
    worker = start_worker()
    deadline = time.monotonic() + 60
    while not app.control.ping(destination=[live], timeout=1):
        assert time.monotonic() < deadline, f"worker {live} never answered:\n{worker.log()}"
    held = []
    for relative_id, runner in [("lost", "gone@box"), ("busy", live), ("other", None)]:
        held.append(hold_unacknowledged(redis_url, "run1", relative_id))
        if runner:
            ledger.mark_started("run1", relative_id, runner)
    client = redis.Redis.from_url(redis_url)
    assert client.hlen("unacked") == 3
    # when a worker named like the live one starts, it finds that video but takes nothing back,
    assert [o.relative_id for o in find_orphaned_tasks(app, ledger, live)] == ["busy"]
    assert requeue_orphaned_tasks(app, ledger, live) == []
    assert client.hlen("unacked") == 3
    # and when one named like the gone worker starts, exactly its video goes back to the queue.
    requeued = requeue_orphaned_tasks(app, ledger, "gone@box")
    assert [(o.run_id, o.relative_id) for o in requeued] == [("run1", "lost")]
    assert client.hlen("unacked") == 2
    assert client.llen(HELD_QUEUE) == 1
    for connection in held:  # the "dead" consumers' connections: closing gives their tasks back
        connection.release()
