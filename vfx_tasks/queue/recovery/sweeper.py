"""Put back on the queue every delivery that no live worker holds: nobody will ever settle it.

A delivery stays in kombu's ``unacked`` hash until it is acknowledged, and Redis would hand it out
again only after the visibility timeout (12 hours). Whatever stopped its consumer, the delivery
looks the same afterwards: unacknowledged, and in no live worker's record (:mod:`.holders`).
That covers, with one rule, every state a video can be in when its worker or its connection goes:

* received but not started (reserved, waiting for a pool process, or for its retry countdown),
  when the worker dies, or when its connection breaks and Celery drops the request;
* running in a pool process, when the worker dies (the ledger shows it running on a worker that
  holds nothing), or when the connection breaks and Celery cancels it (no retry is sent);
* finished, its result being written or its acknowledgement on the way, when either happens
  (the next attempt finds the video done and acknowledges it without work).

Each worker's :class:`~.reconciler.Reconciler` runs a :class:`Sweeper` every few seconds. A
delivery of the worker's queue that no live record holds, seen so on sweeps at least
:data:`UNHELD_GRACE_SECONDS` apart with the same delivery time, goes back to the queue. The grace
covers the moment between a delivery and its record (written on receipt, or failing that on the
holder's next beat); comparing delivery times means a message put back and taken again meanwhile
is never mistaken for the old delivery, and :func:`~.internals.restore_unchanged` checks that
once more in the transaction that puts it back. Several workers sweeping at once put each
delivery back once.

Before a delivery goes back, its video's ledger entry is released (found by task id, :mod:`.held`):
when the ledger shows it running on a worker that is alive, the attempt was cut off by the
connection, not the video's fault, and is not counted; when that worker has no live record, it
died on the video, and the death counts towards ``max_redeliveries``, so that a video that kills
every worker it reaches ends failed instead of going round for ever. (A worker restarted under
its name takes back its predecessor's videos itself, counting the death, :mod:`.orphans`; only
if it could not, Redis being away when it started, does a sweep find the name alive again and
leave that one death uncounted.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from celery import Celery

from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.recovery.held import RunningVideo, running_by_task_id
from vfx_tasks.queue.recovery.holders import Holders, Holding
from vfx_tasks.queue.recovery.internals import UnackedDelivery, restore_unchanged, unacked_deliveries

logger = logging.getLogger(__name__)

#: How long a delivery must have been seen held by no live worker before it goes back.
UNHELD_GRACE_SECONDS = 15.0


def release_attempts(
    ledger: Ledger, deliveries: list[UnackedDelivery], live: Mapping[str, Holding]
) -> dict[str, RunningVideo]:
    """Release the ledger's running entries of the videos these deliveries are for; return them by task id.

    An entry is left alone while a live worker holds another delivery of the same task (a video
    sent twice, one copy running), and counted as a death only when its worker has no live record.
    """
    held_task_ids = {task_id for holding in live.values() for task_id in holding.deliveries.values()}
    wanted = {d.task_id for d in deliveries if d.task_id is not None} - held_task_ids
    if not wanted:
        return {}
    alive = {holding.worker for holding in live.values()}
    released = {}
    for task_id, video in running_by_task_id(ledger).items():
        if task_id in wanted:
            died = video.worker not in alive
            ledger.release_attempt(video.run_id, video.relative_id, video.worker, died=died)
            released[task_id] = video
    return released


class Sweeper:
    """Puts back the deliveries of ``queue`` held by no live worker for ``grace_seconds`` (see the module)."""

    def __init__(
        self,
        app: Celery,
        *,
        queue: str,
        grace_seconds: float = UNHELD_GRACE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app, self.queue = app, queue
        self.grace_seconds, self.clock = grace_seconds, clock
        #: (delivery tag, delivery time) -> when this sweeper first saw it held by no live worker.
        self._unheld_since: dict[tuple[str, float], float] = {}

    def sweep(self, ledger: Ledger, holders: Holders) -> list[UnackedDelivery]:
        """One sweep; the deliveries put back on the queue."""
        deliveries = [
            d
            for d in unacked_deliveries(self.app)
            if d.routing_key == self.queue and d.delivered_at is not None
        ]
        # The records are read after kombu's hash, so that a delivery recorded in between counts as held.
        live = holders.live()
        held = {tag for holding in live.values() for tag in holding.deliveries}
        now = self.clock()
        unheld = {_identity(d): d for d in deliveries if d.delivery_tag not in held}
        self._unheld_since = {key: self._unheld_since.get(key, now) for key in unheld}
        due = [d for key, d in unheld.items() if now - self._unheld_since[key] >= self.grace_seconds]
        if not due:
            return []
        # The ledger first: once back on the queue, a delivery may be started again at once.
        released = release_attempts(ledger, due, live)
        restored = restore_unchanged(self.app, due)
        for delivery in restored:
            self._unheld_since.pop(_identity(delivery), None)
        if restored:
            logger.warning(
                "Requeued %d video(s) that no live worker held (their worker died, or its connection "
                "to Redis broke): %s",
                len(restored),
                ", ".join(_describe(delivery, released) for delivery in restored),
            )
        return restored

    def forget(self) -> None:
        """Start every count again (after a sweep that could not trust what it read)."""
        self._unheld_since.clear()


def _identity(delivery: UnackedDelivery) -> tuple[str, float]:
    """One delivery of a message: its tag, and when it was delivered (known for every swept one)."""
    return delivery.delivery_tag, delivery.delivered_at or 0.0


def _describe(delivery: UnackedDelivery, released: Mapping[str, RunningVideo]) -> str:
    video = released.get(delivery.task_id or "")
    if video is None:
        return f"task {delivery.task_id or delivery.delivery_tag}"
    return f"{video.relative_id} (was running on {video.worker})"
