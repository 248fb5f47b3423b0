"""A worker restarted under its name takes back, at once, the videos its dead predecessor held.

A task stays unacknowledged in Redis while a worker runs it (``task_acks_late``). When a pool
*child* dies, Celery requeues its task at once; when the whole worker dies (``kill -9``, the OOM
killer on the main process, a lost container, or a decoder crash under the ``threads`` pool),
nothing acknowledges or rejects its tasks, and Redis hands them to another worker only after the
visibility timeout: 12 hours by default.

A restarted worker can do better. Worker names are stable (``gpu0@host``; compose and
``vfx-worker --gpus`` restart a worker under the same name), and the ledger records which worker
runs each video. So before a worker consumes anything, every unacknowledged message of a video the
ledger still shows running under this worker's name (:func:`~.held.find_held_by`) was lost with
its previous process: it goes back to the queue at once. Nothing is taken back while another live
worker answers to the same name.
"""

from __future__ import annotations

import logging

from celery import Celery

from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.recovery.held import HeldVideo, answering, find_held_by, requeue_dead_holders

logger = logging.getLogger(__name__)


def requeue_orphaned_tasks(app: Celery, ledger: Ledger, worker_name: str) -> list[HeldVideo]:
    """Put the videos a dead earlier run of ``worker_name`` held back on the queue; return them.

    Call it before the worker consumes: afterwards its own new deliveries would look the same.
    """
    orphans = find_held_by(app, ledger, {worker_name})
    if not orphans:
        return []
    # Two live workers under one name (two boxes left at the same VFX_NODE_NAME) would take each
    # other's videos: ask first whether one answers to this name (this one does not listen yet).
    if answering(app, [worker_name]):
        logger.warning(
            "Another live worker is named %s: not requeueing the %d video(s) the ledger shows it "
            "running. Give every worker a distinct name (--name, VFX_NODE_NAME).",
            worker_name,
            len(orphans),
        )
        return []
    requeue_dead_holders(app, ledger, orphans)
    logger.warning(
        "Requeued %d video(s) that an earlier run of %s left unfinished when it died: %s",
        len(orphans),
        worker_name,
        ", ".join(orphan.relative_id for orphan in orphans),
    )
    return orphans
