"""What a worker accepts and how much memory it may take: set once, before its pool starts.

:class:`Guards` is a worker bootstep whose work is done when the worker builds its steps, before
the pool forks its processes and before the consumer reads its first message:

* **Only ``vfx.extract_video``.** Celery registers its own tasks on every app (``celery.chord_unlock``,
  ``celery.chain``...), and a message may name any registered task: one naming ``chord_unlock``
  with ``interval: 0`` retried itself without pause, thousands of log lines a second. The worker
  keeps ``vfx.extract_video`` alone in its registry, so Celery drops a message for any other name
  as an unregistered task (one error line, the message rejected), and the refusal is recorded in
  the ledger's ``vfx:refused`` for ``vfx-status``.
* **A memory limit** (``memory_limit_mb``, ``VFX_MEMORY_LIMIT_MB``): the process's RLIMIT_DATA,
  inherited by each prefork pool process. A decode that asks for more fails in that task with an
  allocation error (a :class:`~vfx_tasks.errors.MemoryLimitError` or the decoder's error), instead
  of growing until the kernel's OOM killer takes the whole worker, or the machine. RLIMIT_DATA,
  not RLIMIT_AS: CUDA reserves far more address space than it uses, which RLIMIT_AS would count.
"""

from __future__ import annotations

import logging
import resource
import time
from typing import Any

from celery import Celery, bootsteps
from celery.signals import task_unknown

from vfx_tasks.errors import VfxError
from vfx_tasks.queue.app import EXTRACT_VIDEO_TASK
from vfx_tasks.queue.worker.process import get_ledger
from vfx_tasks.settings import Settings

logger = logging.getLogger(__name__)


class Guards(bootsteps.Step):
    """Keeps only ``vfx.extract_video`` registered and sets the memory limit, as the worker starts."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        settings: Settings = worker.app.settings
        keep_only_the_task(worker.app)
        limit_memory(settings.memory_limit_mb)
        task_unknown.connect(_record_unknown_task, weak=False, dispatch_uid="vfx-unknown-task")


def keep_only_the_task(app: Celery) -> list[str]:
    """Unregister every task but ``vfx.extract_video`` from ``app``; the names dropped."""
    dropped = sorted(name for name in app.tasks if name != EXTRACT_VIDEO_TASK)
    for name in dropped:
        app.tasks.unregister(name)
    return dropped


def limit_memory(limit_mb: int) -> None:
    """Set this process's RLIMIT_DATA to ``limit_mb`` MiB (0: leave it as it is); children inherit it."""
    if not limit_mb:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = limit_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    logger.info("Memory limit of each worker process: %d MiB of data (VFX_MEMORY_LIMIT_MB)", limit // 2**20)


def _record_unknown_task(sender: Any = None, name: Any = None, id: Any = None, **_: Any) -> None:
    """File a message for a task this worker does not run under ``vfx:refused``."""
    settings: Settings | None = getattr(getattr(sender, "app", None), "settings", None)
    if settings is None:
        return
    refusal = {
        "task_id": str(id)[:100], "task": str(name)[:200], "code": "unknown_task", "at": time.time(),
        "message": f"Refusing a message for task {str(name)[:200]!r}: workers run {EXTRACT_VIDEO_TASK} only.",
    }
    try:
        get_ledger(settings).record_refusal(refusal)
    except VfxError as e:
        logger.warning("Could not record the refused message %s in the ledger: %s", id, e)
