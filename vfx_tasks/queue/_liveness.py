"""Take back the videos of workers that are gone for good: dead, and not restarted under their name.

A worker that dies whole (``kill -9``, a lost machine) leaves the videos it ran unacknowledged,
and the ledger shows them ``running`` on it. When it comes back under its name it requeues them
itself (:func:`vfx_tasks.queue.recovery.requeue_orphaned_tasks`); when it never does, Redis would
hand them out again only after the visibility timeout, 12 hours by default. So every live
worker's :class:`~vfx_tasks.queue.recovery.Reconciler` also runs a :class:`DeadWorkerSweeper`
every :data:`SWEEP_INTERVAL_SECONDS`: it pings, through Celery's remote control, every worker the
ledger shows running a video. A worker that has answered no ping for :data:`CONFIRM_SECONDS` (two
sweeps at least that far apart: one busy in C code for a moment, or reconnecting after a Redis
restart, is not declared dead) is gone, and the unacknowledged messages of its videos go back to
the queue. A message is matched by the task id the run gives that video
(:meth:`~vfx_tasks.queue.ledger.RunSpec.task_id`), never by its untrusted arguments.

The dead worker's attempt stays counted: it died in the middle of that video, and a video that
kills every worker that takes it must end failed after ``max_redeliveries`` deaths, as it does
when the worker restarts under its name. Several workers sweeping at once is harmless: kombu
restores a delivery tag only while it is still in the ``unacked`` hash, and the ledger forgets
the dead runner only while it is still the one recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from celery import Celery

from vfx_tasks.extract.decoders import DEFAULT_DECODER
from vfx_tasks.queue._kombu import restore_unacked, unacked_by_task_id
from vfx_tasks.queue.ledger import Ledger, RunSpec

logger = logging.getLogger(__name__)

#: Seconds between two sweeps for dead workers' videos.
SWEEP_INTERVAL_SECONDS = 30.0
#: How long a worker must have answered no ping before its videos are taken back.
CONFIRM_SECONDS = 30.0
#: How long one sweep waits for the pinged workers to answer.
PING_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class DeadHeldVideo:
    """An unacknowledged message of a video the ledger shows running on a dead worker."""

    holder: str
    run_id: str
    relative_id: str
    delivery_tag: str


def run_spec_of(meta: dict[str, str]) -> RunSpec | None:
    """The :class:`RunSpec` a run's ledger description stands for; ``None`` if it does not hash to its id."""
    try:
        spec = RunSpec(
            output_dir=meta["output_dir"],
            model=meta["model"],
            crop_type=meta["crop_type"],
            num_clips_per_video=int(meta["num_clips_per_video"]),
            clip_sampling=meta["clip_sampling"],
            precision=meta["precision"],
            decoder=meta.get("decoder", DEFAULT_DECODER),
        )
    except (KeyError, ValueError):
        return None
    return spec if spec.run_id == meta.get("run_id") else None


def answering(app: Celery, names: Collection[str], *, timeout: float = PING_TIMEOUT_SECONDS) -> set[str]:
    """Which of these workers answer a ping (Celery remote control, through the broker)."""
    if not names:
        return set()
    replies = app.control.ping(destination=sorted(names), timeout=timeout)
    return {name for reply in replies or [] for name in reply}


def find_held_by(app: Celery, ledger: Ledger, holders: Collection[str]) -> list[DeadHeldVideo]:
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
    specs = {run["run_id"]: run_spec_of(run) for run in ledger.runs() if run["run_id"] in run_ids}
    by_task_id = {
        spec.task_id(relative_id): (run_id, relative_id)
        for run_id, relative_id in videos
        if (spec := specs.get(run_id)) is not None
    }
    return [
        DeadHeldVideo(videos[video], *video, message.delivery_tag)
        for task_id, messages in unacked_by_task_id(app, by_task_id).items()
        for message in messages
        for video in [by_task_id[task_id]]
    ]


class DeadWorkerSweeper:
    """Requeues the videos of workers that answered no ping for ``confirm_seconds`` (see the module)."""

    def __init__(
        self,
        app: Celery,
        worker_name: str,
        *,
        confirm_seconds: float = CONFIRM_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app, self.worker_name = app, worker_name
        self.confirm_seconds, self.clock = confirm_seconds, clock
        #: Worker -> when it was first found not answering, since it last answered.
        self._missing_since: dict[str, float] = {}

    def dead_holders(self, ledger: Ledger) -> set[str]:
        """Workers with a video running in the ledger that have answered no ping for ``confirm_seconds``."""
        holders = {worker for running in ledger.running_everywhere().values() for worker in running.values()}
        holders.discard(self.worker_name)  # this one is alive: it is asking
        now = self.clock()
        missing = holders - answering(self.app, holders)
        # A worker that answered, or holds nothing any more, starts from scratch next time.
        self._missing_since = {worker: self._missing_since.get(worker, now) for worker in missing}
        confirmed = now - self.confirm_seconds
        return {worker for worker, since in self._missing_since.items() if since <= confirmed}

    def sweep(self, ledger: Ledger) -> list[DeadHeldVideo]:
        """One sweep; the videos put back on the queue."""
        dead = self.dead_holders(ledger)
        # Read after the ping, so that what is restored is as fresh as it can be.
        stranded = find_held_by(self.app, ledger, dead) if dead else []
        if not stranded:
            return []
        restore_unacked(self.app, [video.delivery_tag for video in stranded])
        for video in stranded:
            ledger.release_attempt(video.run_id, video.relative_id, video.holder, died=True)
        logger.warning(
            "Requeued %d video(s) whose worker(s) %s died and did not come back (no answer for %.0f s): %s",
            len(stranded),
            ", ".join(sorted({video.holder for video in stranded})),
            self.confirm_seconds,
            ", ".join(video.relative_id for video in stranded),
        )
        return stranded
