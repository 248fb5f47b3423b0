"""The worker side: the one task, the work of one video, and the worker's lifecycle.

:mod:`.task` (the Celery task, thin), :mod:`.process` (check, skip or extract, write, record),
:mod:`.message` (a message is untrusted), :mod:`.request` (its headers too), :mod:`.guards` (the
only task, the memory limit), :mod:`.models` (models and inference loops kept per
process), :mod:`.outputs` (manifest check and index row), :mod:`.watchdog` (the hard time limit
where Celery keeps none), :mod:`.lifecycle` (bootstep and pool-process hooks).
"""

from __future__ import annotations

from celery import Celery

from vfx_tasks.queue.app import create_app
from vfx_tasks.queue.worker.guards import Guards
from vfx_tasks.queue.worker.lifecycle import Recovery
from vfx_tasks.queue.worker.task import register_task
from vfx_tasks.settings import Settings


def create_worker_app(settings: Settings) -> Celery:
    """The app a worker runs: :func:`~vfx_tasks.queue.app.create_app` with the task registered and
    the worker's :class:`~.guards.Guards` and :class:`~.lifecycle.Recovery` bootsteps added."""
    app = create_app(settings)
    register_task(app)
    app.steps["worker"].add(Guards)
    app.steps["worker"].add(Recovery)
    return app


__all__ = ["create_worker_app"]
