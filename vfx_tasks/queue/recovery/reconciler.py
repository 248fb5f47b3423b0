"""Take back the videos a live worker stopped running when its connection to Redis broke.

When a worker's connection to Redis breaks (a Redis restart, a failover, a network cut), Celery
terminates the tasks in flight (``worker_cancel_long_running_tasks_on_connection_loss``), as they
could not be acknowledged on the broken connection; their messages stay unacknowledged, and
nothing would redeliver them before the visibility timeout. So every worker runs a
:class:`Reconciler`: it remembers each delivery it receives, and every
:data:`RECONCILE_INTERVAL_SECONDS` it looks for deliveries that are no longer running in this
worker yet still unacknowledged in Redis. One seen like that on two passes in a row (an
acknowledgement in flight is not mistaken for it) goes back to the queue, and its attempt is not
counted as a worker death. Deliveries are this worker's own, matched by their delivery tags.
Less often, the same thread sweeps for videos held by workers that died and never came back under
their name (:mod:`.liveness`). The worker's bootstep (:mod:`vfx_tasks.queue.worker.lifecycle`)
starts and stops it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from celery import Celery

from vfx_tasks.errors import VfxError
from vfx_tasks.queue.job import Job
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.recovery.internals import restore_unacked, still_unacked
from vfx_tasks.queue.recovery.liveness import SWEEP_INTERVAL_SECONDS, DeadWorkerSweeper

logger = logging.getLogger(__name__)

#: Seconds between two reconciliation passes; a stranded video is requeued on its second pass,
#: so within twice this after its worker reconnected.
RECONCILE_INTERVAL_SECONDS = 10.0


@dataclass(frozen=True)
class HeldTask:
    """A delivery this worker received: its tag, and the video it is for, when that is known."""

    delivery_tag: str
    run_id: str | None
    relative_id: str | None


def held_task(delivery_tag: str, kwargs: Any) -> HeldTask:
    """The :class:`HeldTask` of a received message.

    Its video is known only when the arguments are a job's whose run id is its run's own: a forged
    message naming another run's video must not change that video's entry in the ledger.
    """
    try:
        job = Job.from_message(kwargs)
    except VfxError:
        return HeldTask(str(delivery_tag), None, None)
    if job.run_id != job.run.run_id:
        return HeldTask(str(delivery_tag), None, None)
    return HeldTask(str(delivery_tag), job.run_id, job.relative_id)


class Reconciler:
    """Requeues the tasks this live worker received, no longer runs, and could not acknowledge.

    :meth:`received` is called (from the consumer) for every delivery; ``in_flight`` returns the
    delivery tags the worker is running or holds reserved right now; :meth:`reconcile` runs one
    pass, :meth:`start` a daemon thread that runs one every ``interval_seconds``, and a sweep of
    its :class:`~.liveness.DeadWorkerSweeper` every ``sweep_interval_seconds``.
    """

    def __init__(
        self,
        app: Celery,
        worker_name: str,
        *,
        ledger_url: str,
        in_flight: Callable[[], Collection[str]],
        interval_seconds: float = RECONCILE_INTERVAL_SECONDS,
        sweep_interval_seconds: float = SWEEP_INTERVAL_SECONDS,
    ) -> None:
        self.app, self.worker_name, self.ledger_url = app, worker_name, ledger_url
        self.in_flight, self.interval_seconds = in_flight, interval_seconds
        self.sweeper = DeadWorkerSweeper(app, worker_name)
        self.sweep_interval_seconds = sweep_interval_seconds
        self._held: dict[str, HeldTask] = {}
        self._held_lock = threading.Lock()  # received() runs on the consumer's thread
        self._suspects: set[str] = set()
        self._ledger: Ledger | None = None
        self._stop = threading.Event()

    def received(self, task: HeldTask) -> None:
        with self._held_lock:
            self._held[task.delivery_tag] = task

    def reconcile(self) -> list[HeldTask]:
        """One pass; the tasks put back on the queue."""
        in_flight = set(self.in_flight())
        with self._held_lock:
            ended = {tag: task for tag, task in self._held.items() if tag not in in_flight}
        unsettled = still_unacked(self.app, ended)
        stranded = [ended[tag] for tag in unsettled if tag in self._suspects]
        if stranded:
            restore_unacked(self.app, [task.delivery_tag for task in stranded])
            logger.warning(
                "Requeued %d video(s) that %s stopped running when its connection to Redis was lost "
                "(they could not be acknowledged): %s",
                len(stranded),
                self.worker_name,
                ", ".join(task.relative_id or task.delivery_tag for task in stranded),
            )
        # Settled (acknowledged, rejected, restored) deliveries need no watching any more.
        settled = set(ended) - unsettled | {task.delivery_tag for task in stranded}
        with self._held_lock:
            for tag in settled:
                self._held.pop(tag, None)
        self._suspects = unsettled - settled
        self._forget_attempts(stranded)
        return stranded

    def _forget_attempts(self, tasks: list[HeldTask]) -> None:
        if not tasks:
            return
        ledger = self._get_ledger()
        for task in tasks:
            if task.run_id and task.relative_id:
                ledger.release_attempt(task.run_id, task.relative_id, self.worker_name)

    def _get_ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger.from_url(self.ledger_url)
        return self._ledger

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="vfx-reconciler", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        next_sweep = time.monotonic() + self.sweep_interval_seconds
        while not self._stop.wait(self.interval_seconds):
            self._guarded("reconcile its tasks with Redis", self.reconcile)
            if time.monotonic() >= next_sweep:
                # One thread for both: a sweep blocks reconciling for a ping's timeout at most.
                self._guarded("look for dead workers' videos", lambda: self.sweeper.sweep(self._get_ledger()))
                next_sweep = time.monotonic() + self.sweep_interval_seconds

    def _guarded(self, what: str, work: Callable[[], object]) -> None:
        try:
            work()
        except Exception as e:
            # Redis away (the consumer reconnects on its own) or anything else: the next pass retries.
            self._ledger = None
            logger.warning(
                "%s could not %s (%s); retrying in %.0f s", self.worker_name, what, e, self.interval_seconds
            )
