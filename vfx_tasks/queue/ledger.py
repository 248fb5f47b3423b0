"""The run ledger in Redis: which videos of a run are queued, running, done or failed.

A *run* is one output root + model + the settings that change the features (crop type, number
of clips, clip sampling, precision). Its id is a hash of those, so every producer and worker
computes the same keys. Per run, all hashes are keyed by the video's relative id:

* ``vfx:run:<run_id>:meta``        the run's description (output_dir, model, ...)
* ``vfx:run:<run_id>:pending``     relative_id -> task id; claimed with HSETNX, so two producers
                                   never queue one video twice; removed when the task ends. A
                                   claim is a promise, not proof: its message may have been lost
                                   (see :func:`vfx_tasks.queue.producer.enqueue_videos`)
* ``vfx:run:<run_id>:running``     relative_id -> worker hostname, while a worker is on it
* ``vfx:run:<run_id>:deliveries``  relative_id -> attempts started that have not ended
                                   (a count above 1 means earlier workers died mid-video)
* ``vfx:run:<run_id>:done``        relative_id -> JSON summary, written after the output's rename
* ``vfx:run:<run_id>:failed``      relative_id -> JSON ``{"code", "message"}``
* ``vfx:runs``                     set of every run id, for ``vfx-status``
"""

# long: one Redis data model (the run's hashes, their Lua scripts and every reader and writer of
# them); split, a change to a key's meaning would have to be found in several places.

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import redis

from vfx_tasks.extract.decoders import DEFAULT_DECODER
from vfx_tasks.queue.connection import connect, redis_errors

_T = TypeVar("_T")
_TASK_ID_NAMESPACE = uuid.UUID("5b0e3c56-8f57-4c55-9d0e-8f1c9a6c2b41")
_STATES = ("pending", "running", "deliveries", "done", "failed")
#: KEYS: running, deliveries; ARGV: relative id, worker, "1" to uncount the attempt. Atomic, so
#: that a worker that started the video in between keeps its entry.
_RELEASE_ATTEMPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[3] ~= '1' then return 1 end
if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
return 1
"""


@dataclass(frozen=True)
class RunSpec:
    """What makes two extractions produce the same features in the same place."""

    output_dir: str
    model: str
    crop_type: str
    num_clips_per_video: int
    clip_sampling: str
    precision: str
    #: The video decoder (:data:`vfx_tasks.extract.decoders.DECODERS`): another one moves the pixels.
    decoder: str = DEFAULT_DECODER

    @classmethod
    def create(cls, output_dir: str | os.PathLike[str], **kwargs: Any) -> RunSpec:
        """Like the constructor, with ``output_dir`` made absolute so every machine agrees."""
        return cls(output_dir=str(Path(output_dir).expanduser().resolve()), **kwargs)

    @cached_property
    def run_id(self) -> str:
        fields = asdict(self)
        if self.decoder == DEFAULT_DECODER:
            del fields["decoder"]  # runs from before the choice keep their ids, ledgers and messages
        payload = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:20]

    def task_id(self, relative_id: str) -> str:
        """Deterministic task id of one video in this run (a UUID, as Celery expects)."""
        return str(uuid.uuid5(_TASK_ID_NAMESPACE, f"{self.run_id}/{relative_id}"))


@dataclass(frozen=True)
class RunCounts:
    """How many videos of a run are in each state."""

    queued: int
    running: int
    done: int
    failed: int


class Ledger:
    """Reads and writes the run ledger on one Redis connection."""

    def __init__(self, client: redis.Redis, url: str = "") -> None:
        self.client = client
        self.url = url or repr(client)

    @classmethod
    def from_url(cls, url: str) -> Ledger:
        return cls(connect(url), url)

    def _call(self, fn: Callable[[], _T]) -> _T:
        with redis_errors(self.url):
            return fn()

    @staticmethod
    def _key(run_id: str, state: str) -> str:
        return f"vfx:run:{run_id}:{state}"

    # -- producer side -------------------------------------------------------------------------

    def register_run(self, run: RunSpec) -> None:
        def register() -> None:
            pipe = self.client.pipeline()
            pipe.sadd("vfx:runs", run.run_id)
            pipe.hset(self._key(run.run_id, "meta"), mapping={k: str(v) for k, v in asdict(run).items()})
            pipe.execute()

        self._call(register)

    def claim(self, run: RunSpec, relative_ids: list[str], *, force: bool = False) -> list[bool]:
        """Mark videos as queued; return, per video, whether this caller got it (and must send it).

        Without ``force`` a video already queued or running is not claimed again. With ``force``
        every video is claimed and its done/failed entries are dropped.
        """
        pending = self._key(run.run_id, "pending")

        def claim_all() -> list[bool]:
            pipe = self.client.pipeline(transaction=False)
            for relative_id in relative_ids:
                if force:
                    pipe.hset(pending, relative_id, run.task_id(relative_id))
                    pipe.hdel(self._key(run.run_id, "done"), relative_id)
                    pipe.hdel(self._key(run.run_id, "failed"), relative_id)
                    pipe.hdel(self._key(run.run_id, "deliveries"), relative_id)
                else:
                    pipe.hsetnx(pending, relative_id, run.task_id(relative_id))
            replies = pipe.execute()
            if force:
                return [True] * len(relative_ids)
            return [bool(reply) for reply in replies]

        return self._call(claim_all)

    def claims_not_started(self, run_id: str, relative_ids: list[str]) -> set[str]:
        """Of these videos, those claimed (pending) that no worker runs and none has finished.

        Their message should be waiting in the queue; if it is not there, it was lost (a producer
        killed between claiming and sending, or Redis restarted without its last writes).
        """

        def select() -> set[str]:
            pipe = self.client.pipeline(transaction=False)
            for state in ("pending", "running", "done"):
                pipe.hmget(self._key(run_id, state), relative_ids)
            pending, running, done = pipe.execute()
            rows = zip(relative_ids, pending, running, done, strict=True)
            return {
                relative_id
                for relative_id, claim, worker, summary in rows
                if claim is not None and worker is None and summary is None
            }

        return self._call(select) if relative_ids else set()

    def is_done(self, run_id: str, relative_id: str) -> bool:
        """Whether the ledger records this video as done (its output may still have gone since)."""
        return bool(self._call(lambda: self.client.hexists(self._key(run_id, "done"), relative_id)))

    def failed_since_queued(self, run_id: str, relative_id: str) -> bool:
        """Whether the video's last attempt failed and nobody has queued it again since.

        A message for such a video is a stale redelivery (of a task that ended without being
        acknowledged), not a request: a rerun of ``vfx-enqueue`` claims the video again first.
        """

        def select() -> bool:
            pipe = self.client.pipeline(transaction=False)
            pipe.hexists(self._key(run_id, "failed"), relative_id)
            pipe.hexists(self._key(run_id, "pending"), relative_id)
            failed, claimed = pipe.execute()
            return bool(failed) and not claimed

        return self._call(select)

    def release(self, run_id: str, relative_ids: Iterable[str]) -> None:
        """Undo :meth:`claim` for videos that could not be sent."""
        ids = list(relative_ids)
        if ids:
            self._call(lambda: self.client.hdel(self._key(run_id, "pending"), *ids))

    def forget_done(self, run_id: str, relative_ids: Iterable[str]) -> None:
        """Drop done entries whose output file has gone, so the videos can be queued again."""
        ids = list(relative_ids)
        if ids:
            self._call(lambda: self.client.hdel(self._key(run_id, "done"), *ids))

    # -- worker side ---------------------------------------------------------------------------

    def mark_started(self, run_id: str, relative_id: str, worker: str) -> int:
        """Record an attempt; return how many attempts have started without ending (this one included)."""

        def start() -> int:
            pipe = self.client.pipeline()
            pipe.hincrby(self._key(run_id, "deliveries"), relative_id, 1)
            pipe.hset(self._key(run_id, "running"), relative_id, worker)
            return int(pipe.execute()[0])

        return self._call(start)

    def release_attempt(self, run_id: str, relative_id: str, worker: str, *, died: bool = False) -> bool:
        """Forget ``worker``'s attempt, ended through no fault of the video (its Redis connection
        was lost): not running any more, and not counted as a worker death. Whether it was forgotten.

        With ``died`` the worker died mid-video: not running any more either, but the attempt stays
        counted, as a death (see ``max_redeliveries``). Nothing changes when another worker has
        started the video since.
        """
        keys = [self._key(run_id, "running"), self._key(run_id, "deliveries")]
        uncount = "0" if died else "1"
        return bool(
            self._call(lambda: self.client.eval(_RELEASE_ATTEMPT, 2, *keys, relative_id, worker, uncount))
        )

    def mark_done(self, run_id: str, relative_id: str, summary: dict[str, Any]) -> None:
        self._end(run_id, relative_id, "done", summary, drop="failed")

    def mark_failed(self, run_id: str, relative_id: str, reason: dict[str, str]) -> None:
        self._end(run_id, relative_id, "failed", reason, drop="done")

    def mark_retrying(self, run_id: str, relative_id: str) -> None:
        """The attempt ended with a transient error and the task was re-sent: it is queued again."""

        def retry() -> None:
            pipe = self.client.pipeline()
            pipe.hdel(self._key(run_id, "running"), relative_id)
            pipe.hdel(self._key(run_id, "deliveries"), relative_id)
            pipe.execute()

        self._call(retry)

    def _end(self, run_id: str, relative_id: str, state: str, value: dict[str, Any], *, drop: str) -> None:
        def end() -> None:
            pipe = self.client.pipeline()
            pipe.hset(self._key(run_id, state), relative_id, json.dumps(value))
            for other in ("pending", "running", "deliveries", drop):
                pipe.hdel(self._key(run_id, other), relative_id)
            pipe.execute()

        self._call(end)

    # -- reading -------------------------------------------------------------------------------

    def counts(self, run_id: str) -> RunCounts:
        def count() -> RunCounts:
            pipe = self.client.pipeline(transaction=False)
            for state in ("pending", "running", "done", "failed"):
                pipe.hlen(self._key(run_id, state))
            pending, running, done, failed = pipe.execute()
            return RunCounts(queued=max(pending - running, 0), running=running, done=done, failed=failed)

        return self._call(count)

    def entries(self, run_id: str, state: str) -> dict[str, Any]:
        """``relative_id -> value`` of one state; ``done`` and ``failed`` values are decoded from JSON."""
        assert state in _STATES, state
        raw = self._call(lambda: self.client.hgetall(self._key(run_id, state)))
        if state in ("done", "failed"):
            return {k: json.loads(v) for k, v in raw.items()}
        return raw

    def running_everywhere(self) -> dict[str, dict[str, str]]:
        """``run_id -> {relative_id: worker}`` of every run that has a video running."""

        def read() -> dict[str, dict[str, str]]:
            run_ids = sorted(self.client.smembers("vfx:runs"))
            pipe = self.client.pipeline(transaction=False)
            for run_id in run_ids:
                pipe.hgetall(self._key(run_id, "running"))
            replies = zip(run_ids, pipe.execute(), strict=True)
            return {run_id: running for run_id, running in replies if running}

        return self._call(read)

    def done_ids(self, run_id: str) -> set[str]:
        """Relative ids of the run's done videos (without decoding their summaries)."""
        return set(self._call(lambda: self.client.hkeys(self._key(run_id, "done"))))

    def summaries(self, run_id: str, state: str, relative_ids: list[str]) -> dict[str, Any]:
        """Decoded ``done`` / ``failed`` entries of the given videos that have one."""
        if not relative_ids:
            return {}
        values = self._call(lambda: self.client.hmget(self._key(run_id, state), relative_ids))
        return {k: json.loads(v) for k, v in zip(relative_ids, values, strict=True) if v is not None}

    def runs(self) -> list[dict[str, str]]:
        """Every run's description, with its ``run_id``."""

        def list_runs() -> list[dict[str, str]]:
            run_ids = sorted(self.client.smembers("vfx:runs"))
            pipe = self.client.pipeline(transaction=False)
            for run_id in run_ids:
                pipe.hgetall(self._key(run_id, "meta"))
            return [{"run_id": run_id, **meta} for run_id, meta in zip(run_ids, pipe.execute(), strict=True)]

        return self._call(list_runs)
