"""Which videos of a run wait on nothing: ``vfx-status`` names them instead of a silent wait.

A video the ledger shows queued is on its way while its message waits in the queue, or is
delivered to a live worker process that has recorded it (:mod:`.holders`). It is *stranded* when

* ``unheld``: its message is delivered and held by no live process. A live worker's sweep puts it
  back within about half a minute (:mod:`.sweeper`); one that stays so longer says that no worker
  is up (or that a worker too old to keep records has it);
* ``missing``: no message for it exists, in the queue or delivered (a producer killed between
  recording and sending, a Redis that lost its last writes). Running the same ``vfx-enqueue``
  command again sends it;

and a video the ledger shows running is stranded (``gone``) when the worker it runs on has no
live record: it died, and the video goes back once a live worker sweeps.

The queue is read before the deliveries, and those before the records; a delivery counts as
unheld only once older than a sweep's grace, so that one a worker has just taken and not yet
recorded is not shown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from celery import Celery

from vfx_tasks.queue.ledger import Ledger, State
from vfx_tasks.queue.recovery.held import runs_by_id
from vfx_tasks.queue.recovery.holders import Holders
from vfx_tasks.queue.recovery.internals import unacked_deliveries, waiting_task_ids
from vfx_tasks.queue.recovery.reconciler import RECONCILE_INTERVAL_SECONDS
from vfx_tasks.queue.recovery.sweeper import UNHELD_GRACE_SECONDS

#: What a sweep takes at most to put back a delivery nobody holds, while some worker is up.
SWEEP_SECONDS = UNHELD_GRACE_SECONDS + 2 * RECONCILE_INTERVAL_SECONDS


@dataclass(frozen=True)
class StrandedVideo:
    """A video of a run that no live worker will run unless something changes."""

    relative_id: str
    #: The ledger's state of the video.
    state: Literal["pending", "running"]
    reason: Literal["unheld", "missing", "gone"]
    #: What happened and what to do, in a sentence.
    detail: str


def stranded_videos(
    app: Celery, ledger: Ledger, holders: Holders, run_id: str, *, queue: str
) -> list[StrandedVideo]:
    """The run's videos queued or running in the ledger that no live worker holds (see the module)."""
    run = runs_by_id(ledger, {run_id}).get(run_id)
    if run is None:
        return []
    pending, running = ledger.entries(run_id, State.PENDING), ledger.entries(run_id, State.RUNNING)
    queued = set(pending) - set(running) - ledger.done_ids(run_id)
    # The queue first: a message a worker takes meanwhile is then seen in one place or the other.
    waiting = waiting_task_ids(app, queue) if queued else set()
    deliveries = unacked_deliveries(app) if queued else []
    live = holders.live()
    held = {tag for holding in live.values() for tag in holding.deliveries}
    now = time.time()
    found = [
        StrandedVideo(relative_id, "running", "gone", f"running on {worker}, which is gone (no live record)")
        for relative_id, worker in sorted(running.items())
        if worker not in {holding.worker for holding in live.values()}
    ]
    for relative_id in sorted(queued):
        task_id = run.task_id(relative_id)
        if task_id in waiting:
            continue
        copies = [d for d in deliveries if d.task_id == task_id]
        if not copies:
            found.append(StrandedVideo(relative_id, "pending", "missing", _MISSING))
            continue
        unheld = [d.delivered_at for d in copies if d.delivery_tag not in held and d.delivered_at is not None]
        ages = [now - delivered_at for delivered_at in unheld]
        if len(ages) == len(copies) and min(ages) >= UNHELD_GRACE_SECONDS:
            found.append(StrandedVideo(relative_id, "pending", "unheld", _unheld(min(ages))))
    return found


_MISSING = "no message for it in the queue: run the same vfx-enqueue command again to send it"


def _unheld(age_seconds: float) -> str:
    return (
        f"delivered {age_seconds:.0f} s ago and held by no live worker: a worker's sweep puts it back "
        f"within about {SWEEP_SECONDS:.0f} s; if it stays, no worker is up"
    )
