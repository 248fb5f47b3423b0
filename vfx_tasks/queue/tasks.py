"""The one Celery task, ``vfx.extract_video``: a thin shell over :func:`vfx_tasks.queue.worker.process_video`.

Failure policy, through Celery's own task options: a :class:`~vfx_tasks.errors.TransientError` is
retried with exponential backoff (``autoretry_for``, ``retry_backoff``) up to ``max_retries``
times; a :class:`~vfx_tasks.errors.PermanentError` (or any unexpected error) fails the task at
once. Retries and final failures are recorded in the ledger from the task class's hooks.

Time limits (``task_soft_time_limit_seconds``, ``task_time_limit_seconds``): past the soft one the
task fails with a :class:`~vfx_tasks.errors.TaskTimeoutError`; past the hard one Celery kills the
pool process, acknowledges the message (no redelivery) and calls ``on_failure`` in the worker's
main process with ``TimeLimitExceeded``. Both end as a failure with reason ``timeout``.

What a task raises is stored in the result backend and sent in its events (Flower shows both):
secrets in error messages are masked before the error leaves the task.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from vfx_tasks.errors import TaskTimeoutError, TransientError, VfxError
from vfx_tasks.extract.decoders import DEFAULT_DECODER
from vfx_tasks.queue._watchdog import Watchdog, Watched
from vfx_tasks.queue.app import EXTRACT_VIDEO_TASK, app, settings
from vfx_tasks.queue.worker import VideoJob, process_video, record_failure, record_retry
from vfx_tasks.redaction import redact, url_passwords

logger = logging.getLogger(__name__)

#: First retry delay; each further retry doubles it (capped by ``retry_backoff_max_seconds``).
RETRY_BASE_SECONDS = 5

#: This worker's own Redis passwords: masked in every stored error, even outside a URL.
_SECRETS = url_passwords(settings.broker_url, settings.result_backend)


def _redact(text: str) -> str:
    return redact(text, secrets=_SECRETS)


def failure_reason(exc: BaseException) -> dict[str, str]:
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
    return {**reason, "message": _redact(reason["message"])}


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
def _errors_as_stored(job: VideoJob) -> Iterator[None]:
    """Errors leave the task as they are to be kept: a soft timeout as ``timeout``, secrets masked."""
    try:
        yield
    except Exception as e:
        if _timed_out(e):
            raise TaskTimeoutError(
                f"{job.relative_id} ran past the soft time limit of "
                f"{settings.task_soft_time_limit_seconds} s "
                "(VFX_TASK_SOFT_TIME_LIMIT_SECONDS): a stalled download or decoder, or a video too long "
                "for this worker. Raise the limit (and VFX_TASK_TIME_LIMIT_SECONDS) for very long videos."
            ) from e
        message = str(e)
        if _redact(message) == message:
            raise
        # The chain goes too: the errors it holds may quote the same secret.
        raise _masked(e, _redact(message)) from None


def _job(task_id: str, kwargs: Any) -> VideoJob | None:
    """The job a message describes, if it names a run and a video the ledger can record it under."""
    try:
        job = VideoJob(**kwargs)
    except TypeError:
        job = None
    # A crafted message may carry anything; the ledger's keys must at least be strings.
    if job is None or not isinstance(job.run_id, str) or not isinstance(job.relative_id, str):
        logger.error("Task %s has malformed arguments %.300r; nothing to record", task_id, kwargs)
        return None
    return job


def _record_expired(expired: list[Watched]) -> None:
    """Record tasks the watchdog found past the hard limit as failed (``timeout``), as Celery would."""
    limit = settings.task_time_limit_seconds
    for watched in expired:
        reason = failure_reason(TimeLimitExceeded(limit))
        record_failure(watched.job, reason, settings=settings)  # type: ignore[arg-type]
        try:
            app.backend.mark_as_failure(watched.task_id, TaskTimeoutError(reason["message"]))
        except Exception:
            logger.warning("Could not store the timeout of task %s in the result backend", watched.task_id)


#: This process's hard time limit for pools that keep none (see vfx_tasks.queue._watchdog).
_watchdog = Watchdog(settings.task_time_limit_seconds, on_expired=_record_expired)


class ExtractVideoTask(Task):
    """Records retries and final failures in the ledger; Celery stores failures in the result backend."""

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        job = _job(task_id, kwargs)
        if job is None:
            return
        # Celery calls this once the retry message is sent: with a zero delay (full jitter draws
        # one now and then) another worker may already have started the video, whose running
        # entry and attempt count this then drops. It shows as queued until it ends, and a crash
        # meanwhile is left to the visibility timeout: degraded bookkeeping, no lost video.
        try:
            record_retry(job, settings=settings)
        except VfxError:
            logger.warning("Could not record the retry of %s in the ledger", job.relative_id)
        ceiling = min(settings.retry_backoff_max_seconds, RETRY_BASE_SECONDS * 2**self.request.retries)
        logger.warning(
            "%s: %s; retry %d in at most %d s", job.relative_id, exc, self.request.retries + 1, ceiling
        )

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        job = _job(task_id, kwargs)
        if job is None:
            return
        try:
            record_failure(job, failure_reason(exc), settings=settings)
        except VfxError:
            logger.exception("Could not record the failure of task %s in the ledger", task_id)


@app.task(
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
)
def extract_video(
    self: ExtractVideoTask,
    *,
    video_path: str,
    output_dir: str,
    relative_id: str,
    run_id: str,
    model: str,
    crop_type: str,
    clip_sampling: str,
    num_clips_per_video: int,
    batch_size: int,
    precision: str,
    labels: dict[str, Any] | None = None,
    decoder: str = DEFAULT_DECODER,
) -> dict[str, Any]:
    """Extract one video's features to ``<output_dir>/<relative_id>.npy``; return a JSON summary."""
    job = VideoJob(
        video_path=video_path,
        output_dir=output_dir,
        relative_id=relative_id,
        run_id=run_id,
        model=model,
        crop_type=crop_type,
        clip_sampling=clip_sampling,
        num_clips_per_video=num_clips_per_video,
        batch_size=batch_size,
        precision=precision,
        labels=labels,
        decoder=decoder,
    )
    with _watchdog.watch(self.request.id or "unknown", job), _errors_as_stored(job):
        return process_video(job, settings=settings, worker_name=self.request.hostname or "unknown")
