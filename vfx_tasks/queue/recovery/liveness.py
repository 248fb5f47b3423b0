"""Take back the videos of workers that are gone for good: dead, and not restarted under their name.

A worker that dies whole (``kill -9``, a lost machine) leaves the videos it ran unacknowledged,
and the ledger shows them ``running`` on it. When it comes back under its name it requeues them
itself (:func:`~.orphans.requeue_orphaned_tasks`); when it never does, Redis would hand them out
again only after the visibility timeout, 12 hours by default. So every live worker's
:class:`~.reconciler.Reconciler` also runs a :class:`DeadWorkerSweeper`
every :data:`SWEEP_INTERVAL_SECONDS`: it pings, through Celery's remote control, every worker the
ledger shows running a video. A worker that has answered no ping for :data:`CONFIRM_SECONDS` (two
sweeps at least that far apart: one busy in C code for a moment, or reconnecting after a Redis
restart, is not declared dead) is gone, and the unacknowledged messages of its videos go back to
the queue (found and put back by :mod:`.held`, as a restarted worker does).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from celery import Celery

from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.recovery.held import HeldVideo, answering, find_held_by, requeue_dead_holders

logger = logging.getLogger(__name__)

#: Seconds between two sweeps for dead workers' videos.
SWEEP_INTERVAL_SECONDS = 30.0
#: How long a worker must have answered no ping before its videos are taken back.
CONFIRM_SECONDS = 30.0


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

    def sweep(self, ledger: Ledger) -> list[HeldVideo]:
        """One sweep; the videos put back on the queue."""
        dead = self.dead_holders(ledger)
        # Read after the ping, so that what is restored is as fresh as it can be.
        stranded = find_held_by(self.app, ledger, dead) if dead else []
        if not stranded:
            return []
        requeue_dead_holders(self.app, ledger, stranded)
        logger.warning(
            "Requeued %d video(s) whose worker(s) %s died and did not come back (no answer for %.0f s): %s",
            len(stranded),
            ", ".join(sorted({video.holder for video in stranded})),
            self.confirm_seconds,
            ", ".join(video.relative_id for video in stranded),
        )
        return stranded
