"""The one Celery task, ``vfx.extract_video``: a thin shell over
:func:`~vfx_tasks.queue.worker.process.process_video`.

Failure policy, through Celery's own task options: a :class:`~vfx_tasks.errors.TransientError` is
retried with exponential backoff (``autoretry_for``, ``retry_backoff``) up to ``max_retries``
times; a :class:`~vfx_tasks.errors.PermanentError` (or any unexpected error) fails the task at
once. Retries and final failures are recorded in the ledger from the task class's hooks.

Time limits (``task_soft_time_limit_seconds``, ``task_time_limit_seconds``): past the soft one the
task fails with a :class:`~vfx_tasks.errors.TaskTimeoutError`; past the hard one Celery kills the
pool process, acknowledges the message (no redelivery) and calls ``on_failure`` in the worker's
main process with ``TimeLimitExceeded``. Both end as a failure with reason ``timeout``.

The task is registered on an app by :func:`register_task` (its retry options come from the app's
settings); its arguments are a :class:`~vfx_tasks.queue.job.Job`'s message, read back and checked
before anything else happens, and its headers are replaced by the worker's limits on receipt
(:mod:`.request`). A refused message is filed under the ledger's ``vfx:refused``, and as its
video's failure only when it is well formed, in its own run, and the video is not done (see
:mod:`vfx_tasks.queue.ledger`). What the task runs is logged when it starts and returned in its
result, whatever the message's ``kwargsrepr`` said.

What a task raises is stored in the result backend and sent in its events (Flower shows both):
secrets in error messages are masked before the error leaves the task.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded

from vfx_tasks.errors import (
    MemoryLimitError,
    NameTooLongError,
    TaskTimeoutError,
    TransientError,
    UntrustedMessageError,
    VfxError,
)
from vfx_tasks.queue.app import EXTRACT_VIDEO_TASK
from vfx_tasks.queue.job import Job, ledger_key
from vfx_tasks.queue.recovery.internals import is_cancellation
from vfx_tasks.queue.worker.process import process_video, record_failure, record_refusal, record_retry
from vfx_tasks.queue.worker.watchdog import Watchdog, Watched
from vfx_tasks.redaction import redact, url_passwords
from vfx_tasks.settings import Settings

logger = logging.getLogger(__name__)

#: First retry delay; each further retry doubles it (capped by ``retry_backoff_max_seconds``).
RETRY_BASE_SECONDS = 5


def failure_reason(exc: BaseException, *, settings: Settings) -> dict[str, str]:
    """JSON ``{"code", "message"}`` for any exception, readable by people and scripts, secrets masked."""
    if isinstance(exc, TimeLimitExceeded):
        limit = exc.args[0] if exc.args else settings.task_time_limit_seconds
        exc = TaskTimeoutError(
            f"The worker process was killed at the hard time limit of {limit} s "
            "(VFX_TASK_TIME_LIMIT_SECONDS), not stopped by a soft limit first: stuck in native code "
            "(a hung decoder?). Check the video; for very long videos raise both limits."
        )
    if isinstance(exc, VfxError):
        reason = exc.to_dict()
    else:
        reason = {"code": "unexpected_error", "message": f"{type(exc).__name__}: {exc}"}
    return {**reason, "message": _redact(reason["message"], settings)}


def _redact(text: str, settings: Settings) -> str:
    # This worker's own Redis passwords are masked in every stored error, even outside a URL.
    return redact(text, secrets=url_passwords(settings.broker_url, settings.result_backend))


def _timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` is the soft time limit, or was raised while handling it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SoftTimeLimitExceeded):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _masked(exc: Exception, message: str) -> Exception:
    """An error of ``exc``'s kind (so that retries still apply) with ``message`` instead of its own."""
    try:
        return type(exc)(message)  # every VfxError takes one message; most library errors too
    except TypeError:
        return RuntimeError(f"{type(exc).__name__}: {message}")


@contextmanager
def _errors_as_stored(relative_id: str, settings: Settings) -> Iterator[None]:
    """Errors leave the task as they are to be kept: a soft timeout as ``timeout``, secrets masked."""
    started = time.monotonic()
    limit = settings.task_soft_time_limit_seconds
    try:
        yield
    except Exception as e:
        # A library may catch the soft limit and raise its own error without chaining it (torch's
        # load_state_dict does, with "an exception occurred : ()"): an error that surfaces once the
        # limit has passed is the limit too.
        if _timed_out(e) or (limit and time.monotonic() - started >= limit):
            raise TaskTimeoutError(
                f"{relative_id} ran past the soft time limit of {settings.task_soft_time_limit_seconds} s "
                "(VFX_TASK_SOFT_TIME_LIMIT_SECONDS): a stalled download or decoder, or a video too long "
                "for this worker. Raise the limit (and VFX_TASK_TIME_LIMIT_SECONDS) for very long videos."
            ) from e
        if (too_long := _name_too_long(e)) is not None:
            raise NameTooLongError(
                f"A file name is too long for the file system ({too_long.filename!r:.300}: ENAMETOOLONG); "
                "retrying cannot shorten it. Use shorter folder and file names, or another relative_id."
            ) from e
        if isinstance(e, MemoryError):
            limit = settings.memory_limit_mb
            raise MemoryLimitError(
                f"{relative_id}: the worker process ran out of memory "
                + (f"(VFX_MEMORY_LIMIT_MB={limit})" if limit else "(no VFX_MEMORY_LIMIT_MB set)")
                + ". Fewer videos in flight (-c), smaller videos (VFX_MAX_PIXELS) or a higher limit help."
            ) from None  # the MemoryError itself is Celery's to treat as fatal: it must not surface
        message = str(e)
        if _redact(message, settings) == message:
            raise
        # The chain goes too: the errors it holds may quote the same secret.
        raise _masked(e, _redact(message, settings)) from None


def _name_too_long(exc: BaseException) -> OSError | None:
    """The ENAMETOOLONG error in ``exc`` or its chain, if there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENAMETOOLONG:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class ExtractVideoTask(Task):
    """Records retries and final failures in the ledger; Celery stores failures in the result backend."""

    #: Celery's hook for a task's requests: the message's headers give way to the worker's limits.
    Request = "vfx_tasks.queue.worker.request:ExtractVideoRequest"
    _watchdog_lock = threading.Lock()

    @property
    def settings(self) -> Settings:
        return self.app.settings  # type: ignore[no-any-return]  # a VfxCelery

    @property
    def watchdog(self) -> Watchdog:
        """This process's hard time limit for pools that keep none (see :mod:`.watchdog`)."""
        with self._watchdog_lock:
            if "_watchdog" not in self.__dict__:
                self.__dict__["_watchdog"] = Watchdog(
                    self.settings.task_time_limit_seconds, on_expired=self._record_expired
                )
            return self.__dict__["_watchdog"]  # type: ignore[no-any-return]

    def _record_expired(self, expired: list[Watched]) -> None:
        """Record tasks past the hard limit as failed (``timeout``), as Celery would."""
        limit = self.settings.task_time_limit_seconds
        reason = failure_reason(TimeLimitExceeded(limit), settings=self.settings)
        for watched in expired:
            record_failure(watched.ledger_key, reason, settings=self.settings)
            try:
                self.backend.mark_as_failure(watched.task_id, TaskTimeoutError(reason["message"]))
            except Exception:
                logger.warning("Could not store the timeout of task %s in the result backend",
                               watched.task_id)

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's retry, except that a retry message that cannot be sent keeps the original one.

        When the retry cannot be published (Redis away, or out of memory), Celery rejects the
        original message without requeueing it: the video would be lost. Rejected *with*
        requeueing, the message goes back to the queue now, or, if Redis cannot take that either,
        stays unacknowledged and held by nobody, and a sweep puts it back
        (:mod:`vfx_tasks.queue.recovery.sweeper`).
        """
        try:
            return super().retry(*args, **kwargs)
        except Reject as e:
            if e.requeue:
                raise
            key = ledger_key(self.request.kwargs)
            logger.warning(
                "%s: could not send the retry (%s); the message goes back to the queue instead",
                key[1] if key else self.request.id,
                e.reason,
            )
            if key is not None:
                with contextlib.suppress(VfxError):  # Redis is likely away: a sweep releases it then
                    record_retry(key, settings=self.settings)
            raise Reject(e.reason, requeue=True) from e

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        key = _key_or_log(task_id, kwargs)
        if key is None:
            return
        if is_cancellation(exc, einfo):
            # No retry was sent: the message stays unacknowledged, held by nobody now, and a sweep
            # puts it back and releases the attempt (not counted as a death) once Redis answers.
            # The ledger is left as it is: Redis is most likely away.
            logger.warning("%s: stopped, this worker lost its connection to Redis; put back later", key[1])
            return
        # Celery calls this once the retry message is sent: with a zero delay (full jitter draws
        # one now and then) another worker may already have started the video, whose running
        # entry and attempt count this then drops. It shows as queued until it ends, and a crash
        # meanwhile is left to the sweeps: degraded bookkeeping, no lost video.
        try:
            record_retry(key, settings=self.settings)
        except VfxError:
            logger.warning("Could not record the retry of %s in the ledger", key[1])
        ceiling = min(self.settings.retry_backoff_max_seconds, RETRY_BASE_SECONDS * 2**self.request.retries)
        logger.warning("%s: %s; retry %d in at most %d s", key[1], exc, self.request.retries + 1, ceiling)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        reason = failure_reason(exc, settings=self.settings)
        if isinstance(exc, UntrustedMessageError):
            self._record_refusal(task_id, kwargs, reason)
            return
        key = _key_or_log(task_id, kwargs)
        if key is None:
            return
        try:
            record_failure(key, reason, settings=self.settings)
        except VfxError:
            logger.exception("Could not record the failure of task %s in the ledger", task_id)

    def _record_refusal(self, task_id: str, kwargs: Any, reason: dict[str, str]) -> None:
        try:
            filed = record_refusal(task_id, kwargs, reason, settings=self.settings)
        except VfxError:
            logger.exception("Could not record the refusal of task %s in the ledger", task_id)
            return
        logger.warning("Refused task %s (%s): %s", task_id, f"filed under {filed[1]}" if filed else
                       "filed under vfx:refused only", reason["message"][:500])


def _key_or_log(task_id: str, kwargs: Any) -> tuple[str, str] | None:
    key = ledger_key(kwargs)
    if key is None:
        # A crafted message may carry anything; the ledger's keys must at least be strings.
        logger.error("Task %s has malformed arguments %.300r; nothing to record", task_id, kwargs)
    return key


def extract_video(self: ExtractVideoTask, **kwargs: Any) -> dict[str, Any]:
    """Extract one video's features to ``<output_dir>/<relative_id>.npy``; return a JSON summary."""
    settings = self.settings
    job = Job.from_message(kwargs)  # refused here (a permanent failure) when malformed
    key = (job.run_id, job.relative_id)
    task_id = self.request.id or "unknown"
    # What runs, from the arguments themselves (Flower showed the message's own description), with
    # this worker's Redis passwords masked wherever a crafted path quotes them.
    ran = f"video {job.video_path[:500]!r} -> {job.output_dir[:500]!r} (run {job.run_id})"
    logger.info("Task %s runs %r: %s", task_id, job.relative_id[:300], _redact(ran, settings))
    with self.watchdog.watch(task_id, key), _errors_as_stored(job.relative_id, settings):
        summary = process_video(job, settings=settings, worker_name=self.request.hostname or "unknown")
    return {**summary, "video_path": _redact(job.video_path, settings), "run_id": job.run_id}


def register_task(app: Celery) -> Task:
    """Register ``vfx.extract_video`` on ``app``, with retry options from its settings."""
    settings: Settings = app.settings  # type: ignore[attr-defined]
    return app.task(  # type: ignore[no-any-return]
        # Not shared: a shared task is added to every app finalized later, with this app's options.
        shared=False,
        bind=True,
        name=EXTRACT_VIDEO_TASK,
        base=ExtractVideoTask,
        autoretry_for=(TransientError,),
        # Delays of 5, 10, 20... s, capped. Celery's jitter is "full jitter" (uniform in [0, delay]),
        # wider than the [0.5, 1] x delay this task drew before: workers that failed together still
        # retry apart, which is all the jitter is for.
        retry_backoff=RETRY_BASE_SECONDS,
        retry_backoff_max=settings.retry_backoff_max_seconds,
        retry_jitter=True,
        max_retries=settings.max_retries,
    )(extract_video)
