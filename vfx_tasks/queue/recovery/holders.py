"""Which deliveries each live worker process holds, kept in Redis beside kombu's ``unacked`` hash.

kombu records that a message was delivered and not acknowledged, not to whom. Without that, a
delivery whose consumer is gone looks like one being worked on, and waits for the visibility
timeout (12 hours): a worker killed between receiving a message and starting it, a task Celery
cancelled when its connection broke, a request it dropped while reconnecting. So each worker
process (an *incarnation* of a worker name: a restart under the same name is a new one) keeps a
record of the deliveries it will still settle itself, and any worker's sweep
(:mod:`.sweeper`) can tell a delivery somebody holds from one nobody will ever settle.

A record is written when a delivery is received and every few seconds after (the worker's
:class:`~.reconciler.Reconciler`), always whole, and expires :data:`HOLDER_TTL_SECONDS` after the
last write: a process that stops writing (killed, its machine gone) stops holding anything
without anyone having to notice. Keys:

* ``vfx:holders``               hash incarnation -> worker name: where to find the records
* ``vfx:holder:<incarnation>``  hash delivery tag -> task id, and ``@worker`` -> worker name
                                (so that a record holding nothing still exists)

Like everything read from Redis, a record is untrusted: it is only ever used to leave a delivery
alone, never to change the ledger of a video it names.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import redis

from vfx_tasks.queue.connection import connect, redis_errors

#: A record outlives its last write by this long (its worker writes one every few seconds).
HOLDER_TTL_SECONDS = 20

_INDEX_KEY = "vfx:holders"
_WORKER_FIELD = "@worker"
#: KEYS: the index, then one record per ARGV incarnation. Drops from the index the incarnations
#: whose record has expired, checked in Redis so that one that writes again meanwhile stays.
_PRUNE = """
for i, incarnation in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then redis.call('HDEL', KEYS[1], incarnation) end
end
return 0
"""


def _record_key(incarnation: str) -> str:
    return f"vfx:holder:{incarnation}"


@dataclass(frozen=True)
class Holding:
    """What one live worker process holds: ``delivery tag -> task id``."""

    incarnation: str
    worker: str
    deliveries: Mapping[str, str] = field(default_factory=dict)


class Holders:
    """Reads and writes the records on one Redis connection; Redis failures are transient errors."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self.client, self.url = client, url or repr(client)
        self._prune = client.register_script(_PRUNE)

    @classmethod
    def from_url(cls, url: str) -> Holders:
        return cls(connect(url), url)

    def write(
        self, incarnation: str, worker: str, deliveries: Mapping[str, str], *, ttl_seconds: float
    ) -> None:
        """Replace ``incarnation``'s record with ``deliveries`` (``tag -> task id``), for ``ttl_seconds``."""
        key = _record_key(incarnation)
        with redis_errors(self.url):
            pipe = self.client.pipeline()  # one transaction: a reader never sees half a record
            pipe.delete(key)
            pipe.hset(key, mapping={_WORKER_FIELD: worker, **deliveries})
            pipe.expire(key, max(1, round(ttl_seconds)))
            pipe.hset(_INDEX_KEY, incarnation, worker)
            pipe.execute()

    def live(self) -> dict[str, Holding]:
        """``incarnation -> Holding`` of every process whose record has not expired."""
        with redis_errors(self.url):
            index = self.client.hgetall(_INDEX_KEY)
            incarnations = sorted(index)
            pipe = self.client.pipeline(transaction=False)
            for incarnation in incarnations:
                pipe.hgetall(_record_key(incarnation))
            records = dict(zip(incarnations, pipe.execute(), strict=True))
            gone = [incarnation for incarnation, record in records.items() if not record]
            if gone:
                self._prune(keys=[_INDEX_KEY, *map(_record_key, gone)], args=gone)
        return {
            incarnation: Holding(
                incarnation,
                record.pop(_WORKER_FIELD, index[incarnation]),
                record,
            )
            for incarnation, record in records.items()
            if record
        }

    def forget(self, incarnations: Collection[str]) -> None:
        """Drop these records: their processes are known to be dead."""
        if incarnations:
            with redis_errors(self.url):
                self.client.delete(*map(_record_key, incarnations))
                self.client.hdel(_INDEX_KEY, *incarnations)
