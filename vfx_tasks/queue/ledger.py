"""The run ledger in Redis: which videos of a run are queued, running, done or failed.

A *run* is one output root + the recipe's settings that change the features
(:class:`~vfx_tasks.queue.job.Run`). Its id is a hash of those, so every producer and worker
computes the same keys. Per run, all hashes are keyed by the video's relative id:

* ``vfx:run:<run_id>:meta``        the run's description (output_dir, model, ...)
* ``vfx:run:<run_id>:pending``     relative_id -> task id; claimed with HSETNX, so two producers
                                   never queue one video twice; removed when the task ends. A
                                   claim is a promise, not proof: its message may have been lost
                                   (see :func:`vfx_tasks.queue.producer.enqueue.enqueue_videos`)
* ``vfx:run:<run_id>:running``     relative_id -> worker hostname, while a worker is on it
* ``vfx:run:<run_id>:deliveries``  relative_id -> attempts started that have not ended
                                   (a count above 1 means earlier workers died mid-video)
* ``vfx:run:<run_id>:interrupted`` relative_id -> "1" while an attempt that was stopped from
                                   outside (its worker died, or its Redis connection broke) may
                                   have left temporary files; the next attempt removes them
* ``vfx:run:<run_id>:done``        relative_id -> JSON summary, written after the output's rename
* ``vfx:run:<run_id>:failed``      relative_id -> JSON ``{"code", "message"}``
* ``vfx:runs``                     set of every run id, for ``vfx-status``
* ``vfx:refused``                  the last :data:`MAX_REFUSALS` refused messages, newest first, as
                                   JSON ``{"task_id", "run_id", "relative_id", "code", "message", "at"}``
                                   (ids as the message claimed them); ``vfx:refused:count`` counts all

A refused message (malformed, untrusted, or naming a run its settings do not hash to) is filed
under ``vfx:refused``. Only when it is well formed, its run id being the one its own folder and
settings give, is it also filed as that video's failure, so that ``--wait`` reports it; and never
over a ``done`` entry.
"""

# long: one Redis data model (the run's hashes, their script and every reader and writer of
# them); split, a change to a key's meaning would have to be found in several places.

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import redis

from vfx_tasks.queue.connection import connect, redis_errors
from vfx_tasks.queue.job import Run

_RUNS_KEY = "vfx:runs"
_REFUSED_KEY = "vfx:refused"
_REFUSED_COUNT_KEY = "vfx:refused:count"
#: Refused messages kept for ``vfx-status``: enough to see a pattern, bounded whatever is sent.
MAX_REFUSALS = 1000
#: KEYS: done, failed, pending, running, deliveries; ARGV: relative id, reason JSON. A refusal never
#: replaces a done entry: atomic, so that a video done meanwhile stays done.
_MARK_REFUSED = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
for i = 3, 5 do redis.call('HDEL', KEYS[i], ARGV[1]) end
return 1
"""
#: KEYS: running, deliveries, interrupted; ARGV: relative id, worker, "1" to uncount the attempt.
#: Atomic, so that a worker that started the video in between keeps its entry.
_RELEASE_ATTEMPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], '1')
if ARGV[3] ~= '1' then return 1 end
if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
return 1
"""


class State(str, Enum):
    """The per-run hashes of the ledger, one per state a video can be in."""

    PENDING = "pending"
    RUNNING = "running"
    DELIVERIES = "deliveries"
    INTERRUPTED = "interrupted"
    DONE = "done"
    FAILED = "failed"

    @property
    def holds_json(self) -> bool:
        """Whether the hash's values are JSON (summaries, failure reasons)."""
        return self in (State.DONE, State.FAILED)


@dataclass(frozen=True)
class RunCounts:
    """How many videos of a run are in each state."""

    queued: int
    running: int
    done: int
    failed: int


def _key(run_id: str, state: State | str) -> str:
    return f"vfx:run:{run_id}:{State(state).value}"


def _meta_key(run_id: str) -> str:
    return f"vfx:run:{run_id}:meta"


class Ledger:
    """Reads and writes the run ledger on one Redis connection.

    Every method turns Redis failures into :class:`~vfx_tasks.errors.BrokerUnavailableError` or
    :class:`~vfx_tasks.errors.BrokerBusyError` (transient).
    """

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self.client = client
        self.url = url or repr(client)
        self._release_attempt = client.register_script(_RELEASE_ATTEMPT)
        self._mark_refused = client.register_script(_MARK_REFUSED)

    @classmethod
    def from_url(cls, url: str) -> Ledger:
        return cls(connect(url), url)

    def _errors(self) -> Any:
        return redis_errors(self.url)

    # -- producer side -------------------------------------------------------------------------

    def register_run(self, run: Run) -> None:
        with self._errors():
            pipe = self.client.pipeline()
            pipe.sadd(_RUNS_KEY, run.run_id)
            pipe.hset(_meta_key(run.run_id), mapping=run.to_meta())
            pipe.execute()

    def claim(self, run: Run, relative_ids: list[str], *, force: bool = False) -> list[bool]:
        """Mark videos as queued; return, per video, whether this caller got it (and must send it).

        Without ``force`` a video already queued or running is not claimed again. With ``force``
        every video is claimed and its done/failed entries are dropped.
        """
        pending = _key(run.run_id, State.PENDING)
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            for relative_id in relative_ids:
                if force:
                    pipe.hset(pending, relative_id, run.task_id(relative_id))
                    for state in (State.DONE, State.FAILED, State.DELIVERIES, State.INTERRUPTED):
                        pipe.hdel(_key(run.run_id, state), relative_id)
                else:
                    pipe.hsetnx(pending, relative_id, run.task_id(relative_id))
            replies = pipe.execute()
        if force:
            return [True] * len(relative_ids)
        return [bool(reply) for reply in replies]

    def claims_not_started(self, run_id: str, relative_ids: list[str]) -> set[str]:
        """Of these videos, those claimed (pending) that no worker runs and none has finished.

        Their message should be waiting in the queue; if it is not there, it was lost (a producer
        killed between claiming and sending, or Redis restarted without its last writes).
        """
        if not relative_ids:
            return set()
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            for state in (State.PENDING, State.RUNNING, State.DONE):
                pipe.hmget(_key(run_id, state), relative_ids)
            pending, running, done = pipe.execute()
        rows = zip(relative_ids, pending, running, done, strict=True)
        return {
            relative_id
            for relative_id, claim, worker, summary in rows
            if claim is not None and worker is None and summary is None
        }

    def is_done(self, run_id: str, relative_id: str) -> bool:
        """Whether the ledger records this video as done (its output may still have gone since)."""
        with self._errors():
            return bool(self.client.hexists(_key(run_id, State.DONE), relative_id))

    def failed_since_queued(self, run_id: str, relative_id: str) -> bool:
        """Whether the video's last attempt failed and nobody has queued it again since.

        A message for such a video is a stale redelivery (of a task that ended without being
        acknowledged), not a request: a rerun of ``vfx-enqueue`` claims the video again first.
        """
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            pipe.hexists(_key(run_id, State.FAILED), relative_id)
            pipe.hexists(_key(run_id, State.PENDING), relative_id)
            failed, claimed = pipe.execute()
        return bool(failed) and not claimed

    def release(self, run_id: str, relative_ids: Iterable[str]) -> None:
        """Undo :meth:`claim` for videos that could not be sent."""
        self._forget(run_id, State.PENDING, relative_ids)

    def forget_done(self, run_id: str, relative_ids: Iterable[str]) -> None:
        """Drop done entries whose output file has gone, so the videos can be queued again."""
        self._forget(run_id, State.DONE, relative_ids)

    def _forget(self, run_id: str, state: State, relative_ids: Iterable[str]) -> None:
        ids = list(relative_ids)
        if ids:
            with self._errors():
                self.client.hdel(_key(run_id, state), *ids)

    # -- worker side ---------------------------------------------------------------------------

    def mark_started(self, run_id: str, relative_id: str, worker: str) -> int:
        """Record an attempt; return how many attempts have started without ending (this one included)."""
        with self._errors():
            pipe = self.client.pipeline()
            pipe.hincrby(_key(run_id, State.DELIVERIES), relative_id, 1)
            pipe.hset(_key(run_id, State.RUNNING), relative_id, worker)
            return int(pipe.execute()[0])

    def release_attempt(self, run_id: str, relative_id: str, worker: str, *, died: bool = False) -> bool:
        """Forget ``worker``'s attempt, ended through no fault of the video (its Redis connection
        was lost): not running any more, and not counted as a worker death. Whether it was forgotten.

        With ``died`` the worker died mid-video: not running any more either, but the attempt stays
        counted, as a death (see ``max_redeliveries``). Either way the attempt may have been cut
        off in the middle of writing: the next one is told so (:meth:`take_interrupted`). Nothing
        changes when another worker has started the video since.
        """
        keys = [_key(run_id, State.RUNNING), _key(run_id, State.DELIVERIES), _key(run_id, State.INTERRUPTED)]
        with self._errors():
            return bool(self._release_attempt(keys=keys, args=[relative_id, worker, "0" if died else "1"]))

    def take_interrupted(self, run_id: str, relative_id: str) -> bool:
        """Whether an attempt on this video was stopped from outside since the last one started;
        the mark is taken (the caller cleans up after it)."""
        key = _key(run_id, State.INTERRUPTED)
        with self._errors():
            pipe = self.client.pipeline()
            pipe.hget(key, relative_id)
            pipe.hdel(key, relative_id)
            return pipe.execute()[0] is not None

    def mark_done(self, run_id: str, relative_id: str, summary: dict[str, Any]) -> None:
        self._end(run_id, relative_id, State.DONE, summary, drop=State.FAILED)

    def mark_failed(self, run_id: str, relative_id: str, reason: dict[str, str]) -> None:
        self._end(run_id, relative_id, State.FAILED, reason, drop=State.DONE)

    def mark_refused(self, run_id: str, relative_id: str, reason: dict[str, str]) -> bool:
        """File a refused message of run ``run_id`` as the video's failure, unless the video is done;
        whether it was filed. The caller has checked that the run is the message's own
        (:func:`~vfx_tasks.queue.job.ledger_key`). See :meth:`record_refusal`."""
        states = (State.DONE, State.FAILED, State.PENDING, State.RUNNING, State.DELIVERIES)
        keys = [_key(run_id, state) for state in states]
        with self._errors():
            return bool(self._mark_refused(keys=keys, args=[relative_id, json.dumps(reason)]))

    def record_refusal(self, refusal: dict[str, Any]) -> None:
        """Keep a refused message's description under ``vfx:refused`` (the last :data:`MAX_REFUSALS`)."""
        with self._errors():
            pipe = self.client.pipeline()
            pipe.lpush(_REFUSED_KEY, json.dumps(refusal))
            pipe.ltrim(_REFUSED_KEY, 0, MAX_REFUSALS - 1)
            pipe.incr(_REFUSED_COUNT_KEY)
            pipe.execute()

    def refusals(self, limit: int = MAX_REFUSALS) -> tuple[int, list[dict[str, Any]]]:
        """How many messages were refused in all, and the last ``limit`` of them, newest first."""
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            pipe.get(_REFUSED_COUNT_KEY)
            pipe.lrange(_REFUSED_KEY, 0, max(limit, 1) - 1)
            count, raw = pipe.execute()
        entries = []
        for item in raw[:limit]:
            try:
                entry = json.loads(item)
            except ValueError:
                continue  # written by someone else than a worker; not ours to show
            if isinstance(entry, dict):
                entries.append(entry)
        return int(count or 0), entries

    def mark_retrying(self, run_id: str, relative_id: str) -> None:
        """The attempt ended with a transient error and the task was re-sent: it is queued again."""
        with self._errors():
            pipe = self.client.pipeline()
            pipe.hdel(_key(run_id, State.RUNNING), relative_id)
            pipe.hdel(_key(run_id, State.DELIVERIES), relative_id)
            pipe.execute()

    def _end(
        self, run_id: str, relative_id: str, state: State, value: dict[str, Any], *, drop: State
    ) -> None:
        with self._errors():
            pipe = self.client.pipeline()
            pipe.hset(_key(run_id, state), relative_id, json.dumps(value))
            for other in (State.PENDING, State.RUNNING, State.DELIVERIES, State.INTERRUPTED, drop):
                pipe.hdel(_key(run_id, other), relative_id)
            pipe.execute()

    # -- reading -------------------------------------------------------------------------------

    def counts(self, run_id: str) -> RunCounts:
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            for state in (State.PENDING, State.RUNNING, State.DONE, State.FAILED):
                pipe.hlen(_key(run_id, state))
            pending, running, done, failed = pipe.execute()
        return RunCounts(queued=max(pending - running, 0), running=running, done=done, failed=failed)

    def entries(self, run_id: str, state: State | str) -> dict[str, Any]:
        """``relative_id -> value`` of one state; ``done`` and ``failed`` values are decoded from JSON."""
        state = State(state)
        with self._errors():
            raw = self.client.hgetall(_key(run_id, state))
        return {k: json.loads(v) for k, v in raw.items()} if state.holds_json else raw

    def running_everywhere(self) -> dict[str, dict[str, str]]:
        """``run_id -> {relative_id: worker}`` of every run that has a video running."""
        with self._errors():
            run_ids = sorted(self.client.smembers(_RUNS_KEY))
            pipe = self.client.pipeline(transaction=False)
            for run_id in run_ids:
                pipe.hgetall(_key(run_id, State.RUNNING))
            replies = zip(run_ids, pipe.execute(), strict=True)
        return {run_id: running for run_id, running in replies if running}

    def done_ids(self, run_id: str) -> set[str]:
        """Relative ids of the run's done videos (without decoding their summaries)."""
        with self._errors():
            return set(self.client.hkeys(_key(run_id, State.DONE)))

    def summaries(self, run_id: str, state: State | str, relative_ids: list[str]) -> dict[str, Any]:
        """Decoded ``done`` / ``failed`` entries of the given videos that have one."""
        if not relative_ids:
            return {}
        with self._errors():
            values = self.client.hmget(_key(run_id, state), relative_ids)
        return {k: json.loads(v) for k, v in zip(relative_ids, values, strict=True) if v is not None}

    def runs(self) -> list[dict[str, str]]:
        """Every run's description, with its ``run_id``."""
        with self._errors():
            run_ids = sorted(self.client.smembers(_RUNS_KEY))
            pipe = self.client.pipeline(transaction=False)
            for run_id in run_ids:
                pipe.hgetall(_meta_key(run_id))
            metas = pipe.execute()
        return [{"run_id": run_id, **meta} for run_id, meta in zip(run_ids, metas, strict=True)]
