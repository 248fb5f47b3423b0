"""The one way to find which unacknowledged messages belong to videos a worker held.

A message is matched by the task id its run gives the video (:meth:`~vfx_tasks.queue.job.Run.task_id`),
computed from the run's description in the ledger, and never by the arguments the message carries:
anyone who can write to Redis can forge those. Both ways a dead worker's videos come back use it:
a worker restarted under the same name (:mod:`.orphans`) and live workers sweeping for workers that
never came back (:mod:`.liveness`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

from celery import Celery

from vfx_tasks.queue.job import Run
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.recovery.internals import restore_unacked, unacked_by_task_id

logger = logging.getLogger(__name__)

#: How long one ping waits for the asked workers to answer (Celery remote control, through Redis).
PING_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class HeldVideo:
    """An unacknowledged message of a video the ledger shows running on ``holder``."""

    holder: str
    run_id: str
    relative_id: str
    delivery_tag: str


def answering(app: Celery, names: Collection[str], *, timeout: float = PING_TIMEOUT_SECONDS) -> set[str]:
    """Which of these workers answer a ping."""
    if not names:
        return set()
    replies = app.control.ping(destination=sorted(names), timeout=timeout)
    return {name for reply in replies or [] for name in reply}


def find_held_by(app: Celery, ledger: Ledger, holders: Collection[str]) -> list[HeldVideo]:
    """The unacknowledged messages of the videos the ledger shows running on ``holders``."""
    videos = {
        (run_id, relative_id): worker
        for run_id, running in ledger.running_everywhere().items()
        for relative_id, worker in running.items()
        if worker in holders
    }
    if not videos:
        return []
    run_ids = {run_id for run_id, _ in videos}
    runs = {meta["run_id"]: Run.from_meta(meta) for meta in ledger.runs() if meta["run_id"] in run_ids}
    by_task_id = {
        run.task_id(relative_id): (run_id, relative_id)
        for run_id, relative_id in videos
        if (run := runs.get(run_id)) is not None
    }
    return [
        HeldVideo(videos[video], *video, message.delivery_tag)
        for task_id, messages in unacked_by_task_id(app, by_task_id).items()
        for message in messages
        for video in [by_task_id[task_id]]
    ]


def requeue_dead_holders(app: Celery, ledger: Ledger, held: list[HeldVideo]) -> None:
    """Put the messages back on the queue, and forget their dead holders' attempts in the ledger.

    The attempts stay counted: the holder died in the middle of the video, and a video that kills
    every worker that takes it must end failed after ``max_redeliveries`` deaths. Several workers
    doing this at once is harmless: kombu restores a delivery tag only while it is still in the
    ``unacked`` hash, and the ledger forgets a runner only while it is still the one recorded.
    """
    restore_unacked(app, [video.delivery_tag for video in held])
    for video in held:
        ledger.release_attempt(video.run_id, video.relative_id, video.holder, died=True)
