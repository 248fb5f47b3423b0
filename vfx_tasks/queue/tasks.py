"""The one Celery task, ``vfx.extract_video``: a thin shell over :func:`vfx_tasks.queue.worker.process_video`.

Failure policy: a :class:`~vfx_tasks.errors.PermanentError` (or any unexpected error) fails the
task at once; a :class:`~vfx_tasks.errors.TransientError` is retried with exponential backoff up
to ``max_retries`` times. Final failures are recorded in the ledger with their reason.
"""

from __future__ import annotations

import logging
import random
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


class ExtractVideoTask(Task):
    """Records final failures in the ledger; Celery stores them in the result backend."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        try:
            job = VideoJob(**kwargs)
        except TypeError:
            logger.error("Task %s has malformed arguments %r; nothing to record", task_id, kwargs)
            return
        try:
            record_failure(job, failure_reason(exc), settings=settings)
        except VfxError:
            logger.exception("Could not record the failure of task %s in the ledger", task_id)


@app.task(bind=True, name=EXTRACT_VIDEO_TASK, base=ExtractVideoTask)
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
    try:
        return process_video(job, settings=settings, worker_name=self.request.hostname or "unknown")
    except TransientError as e:
        if self.request.retries >= settings.max_retries:
            raise
        try:
            record_retry(job, settings=settings)
        except VfxError:
            logger.warning("Could not record the retry of %s in the ledger", relative_id)
        delay = min(settings.retry_backoff_max_seconds, RETRY_BASE_SECONDS * 2**self.request.retries)
        delay = delay * random.uniform(0.5, 1.0)  # jitter: workers that failed together retry apart
        logger.warning("%s: %s; retry %d in %.0f s", relative_id, e, self.request.retries + 1, delay)
        raise self.retry(exc=e, countdown=delay, max_retries=settings.max_retries) from e
