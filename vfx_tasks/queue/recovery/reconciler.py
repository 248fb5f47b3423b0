"""The worker's recovery thread: says what this process holds, and puts back what nobody holds.

Every worker process runs one :class:`Reconciler` (started and stopped by the worker's bootstep,
:mod:`vfx_tasks.queue.worker.lifecycle`). Every :data:`RECONCILE_INTERVAL_SECONDS` it

1. writes this process's record (:mod:`.holders`): the deliveries its consumer has received and
   will still settle (reserved, scheduled or running, from Celery's own bookkeeping), plus those
   received since the last write; and, woken by the consumer, at once after each delivery, so
   that the record is at most moments behind what the worker took;
2. sweeps (:mod:`.sweeper`): every delivery of the queue that no live process has recorded, for
   long enough, goes back to the queue, whoever took it and whatever stopped them.

So a delivery this worker's own connection loss cut off (Celery cancels the running task and
drops the reserved ones; nothing acknowledges them) leaves its record on the next write and is
put back by the next sweep past the grace, by this worker or any other: within about half a
minute of Redis answering again. A delivery of a worker that died leaves the records when its
record expires. A sweep whose own record could not be written (Redis away or refusing writes)
decides nothing, and every count starts again: what it read cannot be trusted.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping

from celery import Celery

from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.recovery.holders import HOLDER_TTL_SECONDS, Holders
from vfx_tasks.queue.recovery.sweeper import UNHELD_GRACE_SECONDS, Sweeper

logger = logging.getLogger(__name__)

#: Seconds between two passes (a record written, a sweep).
RECONCILE_INTERVAL_SECONDS = 5.0


class Reconciler:
    """This process's record and sweeps (see the module).

    :meth:`received` is called (from the consumer's thread) for every delivery; ``in_flight``
    returns ``delivery tag -> task id`` of the requests the worker will still settle;
    :meth:`write_record` and :meth:`sweep` are one pass's two steps, :meth:`start` runs them in a
    daemon thread.
    """

    def __init__(
        self,
        app: Celery,
        worker_name: str,
        *,
        redis_url: str,
        queue: str,
        in_flight: Callable[[], Mapping[str, str]],
        interval_seconds: float = RECONCILE_INTERVAL_SECONDS,
        grace_seconds: float = UNHELD_GRACE_SECONDS,
        ttl_seconds: float = HOLDER_TTL_SECONDS,
    ) -> None:
        self.app, self.worker_name, self.redis_url = app, worker_name, redis_url
        self.in_flight, self.interval_seconds, self.ttl_seconds = in_flight, interval_seconds, ttl_seconds
        #: This process's record; a restart under the same name is another one.
        self.incarnation = uuid.uuid4().hex
        self.sweeper = Sweeper(app, queue=queue, grace_seconds=grace_seconds)
        self._received: dict[str, str] = {}
        self._received_lock = threading.Lock()  # received() runs on the consumer's thread
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ledger: Ledger | None = None
        self._holders: Holders | None = None

    def received(self, delivery_tag: str, task_id: str) -> None:
        with self._received_lock:
            self._received[str(delivery_tag)] = str(task_id)
        self._wake.set()

    @property
    def holders(self) -> Holders:
        if self._holders is None:
            self._holders = Holders.from_url(self.redis_url)
        return self._holders

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger.from_url(self.redis_url)
        return self._ledger

    def write_record(self) -> None:
        """Record what this process holds now."""
        with self._received_lock:
            received, self._received = self._received, {}
        try:
            # A delivery just received may not be among Celery's requests yet: it is recorded too.
            self.holders.write(
                self.incarnation,
                self.worker_name,
                {**received, **self.in_flight()},
                ttl_seconds=self.ttl_seconds,
            )
        except Exception:
            with self._received_lock:  # recorded with the next write instead
                self._received = {**received, **self._received}
            raise

    def sweep(self) -> None:
        self.sweeper.sweep(self.ledger, self.holders)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="vfx-reconciler", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        next_sweep = 0.0
        clock = self.sweeper.clock
        while not self._stop.is_set():
            self._wake.wait(max(0.0, next_sweep - clock()))
            self._wake.clear()
            if self._stop.is_set():
                return
            written = self._guarded("write its record of the deliveries it holds", self.write_record)
            if clock() < next_sweep:
                continue  # woken by a delivery: its record is written, the sweep waits its turn
            if written:
                self._guarded("put back the deliveries no live worker holds", self.sweep)
            else:
                self.sweeper.forget()
            next_sweep = clock() + self.interval_seconds

    def _guarded(self, what: str, work: Callable[[], object]) -> bool:
        try:
            work()
        except Exception as e:
            # Redis away (the consumer reconnects on its own) or anything else: the next pass retries.
            self._ledger = self._holders = None
            logger.warning(
                "%s could not %s (%s); retrying in %.0f s", self.worker_name, what, e, self.interval_seconds
            )
            return False
        return True
