"""The worker's lifecycle around its tasks: a Celery bootstep for the main process, signal
handlers for each pool process.

:class:`Recovery` is a worker bootstep: it starts after the pool (so that no thread of ours exists
when prefork children are forked) and before the consumer (so that it sees every delivery). On
start it says which folders tasks may use, takes back what dead earlier processes of this worker
held (:mod:`vfx_tasks.queue.recovery.orphans`), writes this process's first record of what it
holds (nothing yet) and starts its :class:`~vfx_tasks.queue.recovery.reconciler.Reconciler`, which
it tells of every delivery (``task_received``). The reconciler keeps running while the worker
shuts down: a warm shutdown waits for the tasks in flight, which stay recorded as held until
the process ends. Each pool process forgets what it inherited and imports the pipeline before
its first task; its models are released when it ends.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from celery.signals import task_received, worker_process_init, worker_process_shutdown

from vfx_tasks.queue.recovery.internals import in_flight_deliveries
from vfx_tasks.queue.recovery.orphans import requeue_orphaned_tasks
from vfx_tasks.queue.recovery.reconciler import Reconciler
from vfx_tasks.queue.worker.models import forget_models, release_models
from vfx_tasks.queue.worker.process import forget_ledgers
from vfx_tasks.settings import Settings

logger = logging.getLogger(__name__)


class Recovery(bootsteps.StartStopStep):
    """Takes back what earlier processes of this worker left, then records and sweeps while it runs."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.reconciler: Reconciler | None = None

    def start(self, worker: Any) -> None:
        settings: Settings = worker.app.settings
        name: str = worker.hostname
        _say_which_folders_tasks_may_use(name, settings)
        reconciler = self.reconciler = Reconciler(
            worker.app,
            name,
            redis_url=settings.broker_url,
            queue=settings.queue_name,
            in_flight=in_flight_deliveries,
        )
        try:
            requeue_orphaned_tasks(
                worker.app, reconciler.ledger, reconciler.holders, name, incarnation=reconciler.incarnation
            )
            reconciler.write_record()
        except Exception as e:
            # Never keep a worker from starting over this (Redis may be away): live workers' sweeps
            # take back what a dead predecessor held once its record has expired.
            logger.warning("Could not look for videos an earlier run of %s left unfinished: %s", name, e)
        task_received.connect(self._remember_delivery, weak=False)
        reconciler.start()

    def stop(self, worker: Any) -> None:
        # The reconciler goes on until the process ends: the tasks a warm shutdown waits for are
        # still this worker's, and a record that stopped now would let another worker take them.
        task_received.disconnect(self._remember_delivery)

    def _remember_delivery(self, request: Any, **_: Any) -> None:
        if self.reconciler is not None:
            self.reconciler.received(request.message.delivery_tag, request.id)


def _say_which_folders_tasks_may_use(worker_name: str, settings: Settings) -> None:
    # Said once at start, so that an operator learns it before every video fails with the reason.
    if not settings.output_roots:
        logger.warning(
            "%s: VFX_OUTPUT_ROOTS is not set, so every task will be refused. Set it (and VFX_INPUT_ROOTS) "
            "to the folders this worker may write to (and read from).",
            worker_name,
        )
    # ", " between roots: a URL root holds a ':' of its own.
    reads, writes, configs = (
        ", ".join(map(str, roots)) or "-"
        for roots in (settings.input_roots, settings.output_roots, settings.model_roots)
    )
    logger.info("%s: reads videos under %s, writes features under %s, runs tasks' own model configs "
                "from %s", worker_name, reads, writes, configs)


@worker_process_init.connect
def _forget_inherited_state(**_: Any) -> None:
    # A forked child must build its own model and Redis connections; never reuse the parent's.
    forget_models()
    forget_ledgers()


@worker_process_init.connect
def _import_the_pipeline(**_: Any) -> None:
    # Import torch, decord and mmaction2 now, not in the first task: a task's time limits start
    # with it, and a soft limit that lands in a library's own import-time ``except Exception``
    # is swallowed there, which would let a hung task run on to the hard limit.
    from vfx_tasks.extract import pipeline  # noqa: F401
    from vfx_tasks.models._mmaction_compat import import_mmaction_backbones

    import_mmaction_backbones()


@worker_process_shutdown.connect
def _release_models(**_: Any) -> None:
    release_models()
