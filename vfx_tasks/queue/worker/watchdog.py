"""The hard time limit where Celery keeps none: Celery's ``threads`` pool, the default on a GPU.

Under ``prefork`` Celery kills a pool child whose task outlives ``task_time_limit_seconds`` (a
decoder stuck in native code, deaf to the soft limit) and records the failure. The ``threads``
pool has no such limit: a stuck decoder would hold its video, its slot and its core until the
worker stops, and ``vfx-enqueue --wait`` would wait for it forever.

So each worker process runs a :class:`Watchdog`. Every task is watched while it runs; one that is
still running :data:`GRACE_SECONDS` past the hard limit is recorded as failed with reason
``timeout`` (ledger and result backend), and the process exits: a thread stuck in native code
cannot be stopped any other way. Its supervisor (compose's restart policy, ``vfx-worker --gpus``,
``vfx-enqueue --local``) starts it again under its name, and the videos it held go back to the
queue (:mod:`vfx_tasks.queue.recovery.orphans`); the timed-out one is not run again, because a
redelivered message of a video that failed and was not queued since is acknowledged without work
(:func:`vfx_tasks.queue.worker.process.process_video`, through ``Ledger.failed_since_queued``).
Under ``prefork`` Celery's own limit fires first, the grace earlier, so the watchdog never acts
there.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: The watchdog acts this long after the hard limit, so that Celery's own limit (prefork) wins.
GRACE_SECONDS = 10.0
#: How often the watchdog looks.
CHECK_SECONDS = 2.0
#: The worker process's exit status when the watchdog ends it.
EXIT_STATUS = 3


@dataclass(frozen=True)
class Watched:
    """A running task: its id, the ledger key of its video (run id, relative id), when it started."""

    task_id: str
    ledger_key: tuple[str, str]
    started: float


class Watchdog:
    """Ends the process when a watched task runs past ``limit_seconds`` (plus the grace).

    Args:
        limit_seconds: the hard time limit; 0 watches nothing.
        on_expired: called with the expired tasks before the process exits (records them).
        exit: how the process ends (``os._exit``; a test may pass something gentler).
    """

    def __init__(
        self,
        limit_seconds: float,
        *,
        on_expired: Callable[[list[Watched]], None],
        exit: Callable[[int], object] = os._exit,
        grace_seconds: float = GRACE_SECONDS,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self.limit_seconds = limit_seconds
        self.on_expired = on_expired
        self._exit = exit
        self.grace_seconds = grace_seconds
        self.check_seconds = check_seconds
        self._running: dict[int, Watched] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, task_id: str, ledger_key: tuple[str, str]) -> Iterator[None]:
        """Watch the calling thread's task while the block runs."""
        if not self.limit_seconds:
            yield
            return
        key = threading.get_ident()
        with self._lock:
            self._running[key] = Watched(task_id, ledger_key, time.monotonic())
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vfx-watchdog", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._running.pop(key, None)

    def expired(self, now: float | None = None) -> list[Watched]:
        """The watched tasks past the limit and the grace."""
        deadline = (now if now is not None else time.monotonic()) - self.limit_seconds - self.grace_seconds
        with self._lock:
            return [watched for watched in self._running.values() if watched.started <= deadline]

    def _run(self) -> None:
        while True:
            time.sleep(self.check_seconds)
            expired = self.expired()
            if not expired:
                continue
            logger.critical(
                "%d task(s) ran past the hard time limit of %.0f s (VFX_TASK_TIME_LIMIT_SECONDS), stuck "
                "where they cannot be stopped; recording them as failed and ending this worker process "
                "(its supervisor restarts it, and its other videos are queued again)",
                len(expired),
                self.limit_seconds,
            )
            try:
                self.on_expired(expired)
            except Exception:
                logger.exception("Could not record the tasks past the hard time limit")
            self._exit(EXIT_STATUS)
            return
