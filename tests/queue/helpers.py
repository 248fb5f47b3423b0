"""What several queue tests do to Redis and workers: tasks held unacknowledged, as a worker that
died holds them, and waiting for a worker to answer pings."""

from __future__ import annotations

from celery import Celery
from kombu import Connection
from kombu.message import Message

from tests.conftest import WorkerProcess, wait_until
from vfx_tasks.queue.app import EXTRACT_VIDEO_TASK, create_app
from vfx_tasks.queue.job import Job, Run
from vfx_tasks.settings import Settings

#: A queue no worker of these tests consumes: messages sent there stay where the test puts them.
HELD_QUEUE = "held"


def take_without_ack(connection: Connection, queue: str) -> Message:
    """The next message on ``queue``, taken as a worker takes it and left unacknowledged."""
    channel = connection.default_channel
    return wait_until(lambda: channel.basic_get(queue, no_ack=False), f"a task on queue {queue}", timeout=10)


def hold_unacknowledged(
    redis_url: str, run: Run, relative_id: str, *, task_id: str | None = None, queue: str = HELD_QUEUE
) -> Connection:
    """Send a video's task (under its run's task id, or ``task_id``) to ``queue`` and take it off
    the queue without acknowledging it, as a worker that died would.

    Returns the open connection: closing it would give the task back, as a worker that stops does.
    """
    app = create_app(Settings.from_env({}, broker_url=redis_url, queue_name=queue))
    job = Job.create(run, relative_id=relative_id, video_path="/nowhere.mp4")
    app.send_task(EXTRACT_VIDEO_TASK, kwargs=job.to_message(), task_id=task_id or run.task_id(relative_id))
    connection = app.connection_for_read()
    take_without_ack(connection, queue)
    return connection


def wait_until_answering(app: Celery, name: str, worker: WorkerProcess, timeout: float = 60) -> None:
    """Wait until the worker process named ``name`` answers a ping (its log shown if it never does)."""
    wait_until(
        lambda: app.control.ping(destination=[name], timeout=1),
        lambda: f"worker {name} to answer a ping:\n{worker.log()}",
        timeout,
    )
