"""A worker restarted under its name takes back, at once, what its dead predecessor held.

A task stays unacknowledged in Redis while a worker has it (``task_acks_late``). When a pool
*child* dies, Celery requeues its task at once; when the whole worker dies (``kill -9``, the OOM
killer on the main process, a lost container, or a decoder crash under the ``threads`` pool),
nothing settles its deliveries. Live workers' sweeps (:mod:`.sweeper`) put them back once the dead
process's record has expired, well under a minute; a worker restarted under the same name does
better, and counts the death of the video it was running.

Worker names are stable (``gpu0@host``; compose and ``vfx-worker --gpus`` restart a worker under
the same name). So before a worker consumes anything, it puts back every delivery recorded by an
earlier process of its name (:mod:`.holders`) and every delivery of a video the ledger still shows
running under its name (:mod:`.held`, by task id), and releases those videos' ledger entries as
deaths. Nothing is taken back while another live worker answers to the same name (a ping through
Celery's remote control: this one does not listen yet), and nothing another live process holds.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from celery import Celery

from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.recovery.held import running_by_task_id
from vfx_tasks.queue.recovery.holders import Holders
from vfx_tasks.queue.recovery.internals import UnackedDelivery, restore_unchanged, unacked_deliveries

logger = logging.getLogger(__name__)

#: How long one ping waits for the asked workers to answer (Celery remote control, through Redis).
PING_TIMEOUT_SECONDS = 2.0


def answering(app: Celery, names: Collection[str], *, timeout: float = PING_TIMEOUT_SECONDS) -> set[str]:
    """Which of these workers answer a ping."""
    if not names:
        return set()
    replies = app.control.ping(destination=sorted(names), timeout=timeout)
    return {name for reply in replies or [] for name in reply}


def requeue_orphaned_tasks(
    app: Celery, ledger: Ledger, holders: Holders, worker_name: str, *, incarnation: str
) -> list[UnackedDelivery]:
    """Put back what dead earlier processes of ``worker_name`` held; return the deliveries put back.

    ``incarnation`` is this process's record (:mod:`.holders`), which is not an earlier one. Call it
    before the worker consumes: the videos the ledger shows running under this name are then all
    an earlier process's.
    """
    live = holders.live()
    earlier = {
        key: holding for key, holding in live.items() if holding.worker == worker_name and key != incarnation
    }
    running = running_by_task_id(ledger, on=lambda worker: worker == worker_name)
    if not earlier and not running:
        return []
    # Two live workers under one name (two boxes left at the same VFX_NODE_NAME) would take each
    # other's videos: ask first whether one answers to this name.
    if answering(app, [worker_name]):
        logger.warning(
            "Another live worker is named %s: not taking back what the ledger shows it running. Give "
            "every worker a distinct name (--name, VFX_NODE_NAME).",
            worker_name,
        )
        return []
    tags = {tag for holding in earlier.values() for tag in holding.deliveries}
    held_elsewhere = {
        tag for key, holding in live.items() if key not in earlier for tag in holding.deliveries
    }
    orphans = [
        delivery
        for delivery in unacked_deliveries(app)
        if (delivery.delivery_tag in tags or delivery.task_id in running)
        and delivery.delivery_tag not in held_elsewhere
        and delivery.delivered_at is not None
    ]
    # The ledger first: once back on the queue, a video may be started again at once.
    for video in running.values():
        ledger.release_attempt(video.run_id, video.relative_id, worker_name, died=True)
    restored = restore_unchanged(app, orphans)
    holders.forget(earlier)
    if restored or running:
        logger.warning(
            "Requeued %d video(s) that an earlier run of %s left unfinished when it died%s",
            len(restored),
            worker_name,
            f" (it was running {', '.join(sorted(v.relative_id for v in running.values()))})"
            if running
            else "",
        )
    return restored
