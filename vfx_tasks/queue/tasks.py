"""The one Celery task, ``vfx.extract_video``: a thin shell over :func:`vfx_tasks.queue.worker.process_video`.

Failure policy, through Celery's own task options: a :class:`~vfx_tasks.errors.TransientError` is
retried with exponential backoff (``autoretry_for``, ``retry_backoff``) up to ``max_retries``
times; a :class:`~vfx_tasks.errors.PermanentError` (or any unexpected error) fails the task at
once. Retries and final failures are recorded in the ledger from the task class's hooks.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from vfx_tasks.errors import TransientError, VfxError
from vfx_tasks.queue.app import EXTRACT_VIDEO_TASK, app, settings
from vfx_tasks.queue.worker import VideoJob, process_video, record_failure, record_retry

logger = logging.getLogger(__name__)

#: First retry delay; each further retry doubles it (capped by ``retry_backoff_max_seconds``).
RETRY_BASE_SECONDS = 5


def failure_reason(exc: BaseException) -> dict[str, str]:
    """JSON ``{"code", "message"}`` for any exception, readable by people and scripts."""
    if isinstance(exc, VfxError):
        return exc.to_dict()
    return {"code": "unexpected_error", "message": f"{type(exc).__name__}: {exc}"}


def _job(task_id: str, kwargs: Any) -> VideoJob | None:
    try:
        return VideoJob(**kwargs)
    except TypeError:
        logger.error("Task %s has malformed arguments %r; nothing to record", task_id, kwargs)
        return None


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
    )
    return process_video(job, settings=settings, worker_name=self.request.hostname or "unknown")
