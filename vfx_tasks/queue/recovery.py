"""Take back, when a worker starts, the videos a crashed earlier run of the same worker held.

A task stays unacknowledged in Redis while a worker runs it (``task_acks_late``). When a pool
*child* dies, Celery requeues its task at once; when the whole worker dies (``kill -9``, the OOM
killer on the main process, a lost container, or a decoder crash under the ``threads`` pool),
nothing acknowledges or rejects its tasks, and Redis hands them to another worker only after the
visibility timeout: 12 hours by default.

A restarted worker can do better. Worker names are stable (``gpu0@host``; compose and
``vfx-worker --gpus`` restart a worker under the same name), and the ledger records which worker
runs each video. So before a worker consumes anything, every unacknowledged task whose video the
ledger still shows as running under this worker's name was lost with its previous process: it
goes back to the head of the queue at once. Tasks of other, live workers are left alone, and
nothing is taken back while another live worker answers to the same name.

The unacknowledged tasks are read from, and put back through, kombu's Redis transport
bookkeeping: see :mod:`vfx_tasks.queue._kombu`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from celery import Celery

from vfx_tasks.queue._kombu import iter_unacked, restore_unacked
from vfx_tasks.queue.ledger import Ledger

logger = logging.getLogger(__name__)

#: How long to wait for a live worker of the same name to answer before taking its videos back.
PING_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class OrphanedTask:
    """An unacknowledged task that the ledger says this worker was running when it died."""

    delivery_tag: str
    run_id: str
    relative_id: str


def task_kwargs(body: bytes) -> dict[str, Any] | None:
    """The keyword arguments of a Celery (protocol 2) task message body, or ``None``."""
    try:
        _args, kwargs, _embed = json.loads(body)
    except (TypeError, ValueError):
        return None
    return kwargs if isinstance(kwargs, dict) else None


def find_orphaned_tasks(app: Celery, ledger: Ledger, worker_name: str) -> list[OrphanedTask]:
    """Unacknowledged tasks whose videos the ledger shows as running under ``worker_name``."""
    running: dict[str, dict[str, str]] = {}
    orphans = []
    for message in iter_unacked(app):
        kwargs = task_kwargs(message.body)
        if not kwargs or "run_id" not in kwargs or "relative_id" not in kwargs:
            continue  # not one of ours
        run_id, relative_id = str(kwargs["run_id"]), str(kwargs["relative_id"])
        if run_id not in running:
            running[run_id] = ledger.entries(run_id, "running")
        if running[run_id].get(relative_id) == worker_name:
            orphans.append(OrphanedTask(message.delivery_tag, run_id, relative_id))
    return orphans


def requeue_orphaned_tasks(app: Celery, ledger: Ledger, worker_name: str) -> list[OrphanedTask]:
    """Put the tasks a dead earlier run of ``worker_name`` held back at the head of the queue.

    Call it before the worker consumes: afterwards its own new deliveries would look the same.
    """
    orphans = find_orphaned_tasks(app, ledger, worker_name)
    if not orphans:
        return []
    # Two live workers under one name (two boxes left at the same VFX_NODE_NAME) would take each
    # other's videos: ask first whether one answers to this name (this one does not listen yet).
    if app.control.ping(destination=[worker_name], timeout=PING_TIMEOUT_SECONDS):
        logger.warning(
            "Another live worker is named %s: not requeueing the %d video(s) the ledger shows it "
            "running. Give every worker a distinct name (--name, VFX_NODE_NAME).",
            worker_name,
            len(orphans),
        )
        return []
    restore_unacked(app, [orphan.delivery_tag for orphan in orphans])
    logger.warning(
        "Requeued %d video(s) that an earlier run of %s left unfinished when it died: %s",
        len(orphans),
        worker_name,
        ", ".join(orphan.relative_id for orphan in orphans),
    )
    return orphans
