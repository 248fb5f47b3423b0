"""Take back the videos a worker holds but no longer runs: after a crash, and after a lost connection.

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

A live worker strands tasks too. When its connection to Redis breaks (a Redis restart, a
failover, a network cut), Celery terminates the tasks in flight
(``worker_cancel_long_running_tasks_on_connection_loss``), as they could not be acknowledged on
the broken connection; their messages stay unacknowledged, and nothing would redeliver them
before the visibility timeout. So every worker runs a :class:`Reconciler`: it remembers each
delivery it receives, and every :data:`RECONCILE_INTERVAL_SECONDS` it looks for deliveries that
are no longer running in this worker yet still unacknowledged in Redis. One seen like that on two
passes in a row (an acknowledgement in flight is not mistaken for it) goes back to the queue, and
its attempt is not counted as a worker death. Less often, the same thread looks for videos held
by workers that died and never came back under their name: see :mod:`vfx_tasks.queue._liveness`.

The unacknowledged tasks are read from, and put back through, kombu's Redis transport
bookkeeping: see :mod:`vfx_tasks.queue._kombu`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from celery import Celery

from vfx_tasks.queue._kombu import iter_unacked, restore_unacked, still_unacked
from vfx_tasks.queue._liveness import SWEEP_INTERVAL_SECONDS, DeadWorkerSweeper
from vfx_tasks.queue.ledger import Ledger

logger = logging.getLogger(__name__)

#: How long to wait for a live worker of the same name to answer before taking its videos back.
PING_TIMEOUT_SECONDS = 2.0
#: Seconds between two reconciliation passes; a stranded video is requeued on its second pass,
#: so within twice this after its worker reconnected.
RECONCILE_INTERVAL_SECONDS = 10.0


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


@dataclass(frozen=True)
class HeldTask:
    """A delivery this worker received: its tag, and the video its (untrusted) arguments name."""

    delivery_tag: str
    run_id: str | None
    relative_id: str | None


def held_task(delivery_tag: str, kwargs: Any) -> HeldTask:
    """The :class:`HeldTask` of a received message; arguments that do not name a video give ``None``."""
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    run_id, relative_id = kwargs.get("run_id"), kwargs.get("relative_id")
    return HeldTask(
        str(delivery_tag),
        run_id if isinstance(run_id, str) else None,
        relative_id if isinstance(relative_id, str) else None,
    )


class Reconciler:
    """Requeues the tasks this live worker received, no longer runs, and could not acknowledge.

    :meth:`received` is called (from the consumer) for every delivery; ``in_flight`` returns the
    delivery tags the worker is running or holds reserved right now; :meth:`reconcile` runs one
    pass, :meth:`start` a daemon thread that runs one every ``interval_seconds``, and a sweep of
    its :class:`~vfx_tasks.queue._liveness.DeadWorkerSweeper` every ``sweep_interval_seconds``.
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
