"""The work of one task without Celery around it: check, skip or extract, write, record.

A process's models and inference loops are kept in :mod:`vfx_tasks.queue.worker.models`; its
ledger connection here. With Celery's ``threads`` pool several tasks run at once in one process
and share both.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from vfx_tasks.errors import WorkerDiedError
from vfx_tasks.extract.crops import num_crops
from vfx_tasks.queue.job import Job, ledger_key
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.worker.message import check_job
from vfx_tasks.queue.worker.model_files import check_model_files
from vfx_tasks.queue.worker.models import extract_job
from vfx_tasks.queue.worker.outputs import check_job_settings, record_index_row
from vfx_tasks.settings import Settings
from vfx_tasks.sources.fetch import fetched_video
from vfx_tasks.storage import (
    Folder,
    features_match,
    features_name,
    is_url,
    join_url,
    labels_name,
    npy_header,
    open_folder_under,
    output_path,
    write_features,
    write_json,
)

logger = logging.getLogger(__name__)

_ledgers: dict[str, Ledger] = {}
#: Guards the cache above: with the threads pool, tasks start side by side.
_ledgers_lock = threading.Lock()


def get_ledger(settings: Settings) -> Ledger:
    """The process's ledger connection (created after fork, never shared with the parent)."""
    with _ledgers_lock:
        if settings.broker_url not in _ledgers:
            _ledgers[settings.broker_url] = Ledger.from_url(settings.broker_url)
        return _ledgers[settings.broker_url]


def process_video(job: Job, *, settings: Settings, worker_name: str) -> dict[str, Any]:
    """Extract one video's features, write them atomically, record them as done; return the summary.

    Raises:
        WorkerDiedError: earlier attempts on this video died more than ``max_redeliveries`` times.
        PermanentError: the video or the configuration cannot work; retrying will not help.
        TransientError: worth retrying (I/O, Redis, out of memory at one clip).
        UntrustedMessageError: the message names paths outside the roots or values out of bounds.
        UnsafeFileError: a link (or a special or oversized file) where the folder's files or
            folders are, planted before the task or while it ran.
    """
    check_job(job, settings=settings)  # before anything is read, written or recorded
    check_model_files(job.recipe, settings=settings)  # before a config of the message's runs
    ledger = get_ledger(settings)
    # Opened once, walking down from its root without following a link: a folder swapped for a
    # link while the video is extracted stops the write instead of redirecting it. (A URL below a
    # URL root has no links to follow.)
    storage_options = settings.storage_kwargs()
    with open_folder_under(job.output_dir, settings.output_roots, storage_options=storage_options) as folder:
        return _process_in(folder, job, ledger, settings=settings, worker_name=worker_name)


def _output_location(job: Job) -> str:
    if is_url(job.output_dir):
        return join_url(job.output_dir, features_name(job.relative_id))
    return str(output_path(job.output_dir, job.relative_id))


def _process_in(
    folder: Folder, job: Job, ledger: Ledger, *, settings: Settings, worker_name: str
) -> dict[str, Any]:
    if (duplicate := skip_if_done(job, ledger, folder)) is not None:
        return duplicate
    if ledger.failed_since_queued(job.run_id, job.relative_id):
        # Redelivered after its attempt was recorded as failed (a worker process ended by the
        # hard time limit's watchdog, or one that died between recording and acknowledging).
        logger.warning("%s: failed and not queued again since; acknowledged without work", job.relative_id)
        return {"relative_id": job.relative_id, "skipped": "already failed"}
    attempts = ledger.mark_started(job.run_id, job.relative_id, worker_name)
    deaths = attempts - 1
    if deaths > settings.max_redeliveries:
        raise WorkerDiedError(
            f"The worker died {deaths} times on this video (killed by the OOM killer or crashed in the "
            f"decoder?); giving up after VFX_MAX_REDELIVERIES={settings.max_redeliveries} redeliveries."
        )
    if deaths:
        logger.warning("%s: redelivered after %d worker death(s)", job.relative_id, deaths)
    if ledger.take_interrupted(job.run_id, job.relative_id) or deaths:
        # An attempt that died, or was cut off with its connection, may have been writing: its
        # temporary files are nobody's now.
        for leftover in folder.remove_temp_files(of=features_name(job.relative_id)):
            logger.info("%s: removed %s, left by an attempt that was stopped", job.relative_id, leftover)
    check_job_settings(job, folder, settings=settings)
    with fetched_video(
        job.video_path, keep_downloads=settings.keep_downloads, storage_options=settings.storage_kwargs(),
        max_bytes=settings.max_video_bytes,
    ) as video_path:
        result = extract_job(job, video_path, settings=settings)
        # Labels first: a video counts as done once its .npy exists, and then its labels must too.
        if job.labels is not None:
            write_json(folder, labels_name(job.relative_id), job.labels)
        write_features(folder, features_name(job.relative_id), result.features)
    record_index_row(job, result, folder)
    summary = {
        "relative_id": job.relative_id,
        "output": _output_location(job),
        "shape": list(result.shape),
        "num_frames": result.num_frames,
        "fps": result.fps,
        "seconds": round(result.seconds, 3),
        "worker": worker_name,
    }
    ledger.mark_done(job.run_id, job.relative_id, summary)
    return summary


def skip_if_done(job: Job, ledger: Ledger, folder: Folder) -> dict[str, Any] | None:
    """A summary if this message repeats one for a video done with a valid output, else ``None``.

    A rerun of ``vfx-enqueue`` sends a video again when it cannot find its message (see
    :func:`vfx_tasks.queue.producer.enqueue.enqueue_videos`), so two messages may exist for one video.
    The second is acknowledged here without work, without counting as an attempt and without
    writing the output again. A done entry whose file is gone or invalid is computed again.
    """
    if not ledger.is_done(job.run_id, job.relative_id):
        return None
    recipe = job.recipe
    valid = features_match(
        npy_header(folder, features_name(job.relative_id)),
        n_crops=num_crops(recipe.crop_type),
        feature_dim=recipe.model_spec().feature_dim,
        num_clips_per_video=recipe.num_clips_per_video,
    )
    if not valid:
        return None
    # The message may come with a fresh claim (a producer that planned before the video ended):
    # drop it, or the video would count as queued forever.
    ledger.release(job.run_id, [job.relative_id])
    logger.info("%s: already done with a valid output; acknowledged without work", job.relative_id)
    return {"relative_id": job.relative_id, "output": _output_location(job), "skipped": "already done"}


def record_failure(key: tuple[str, str], reason: dict[str, str], *, settings: Settings) -> None:
    """Record a final failure of video ``key`` (run id, relative id) in the ledger (the result
    backend keeps it too, through Celery)."""
    get_ledger(settings).mark_failed(*key, reason)


def record_refusal(
    task_id: str, kwargs: Any, reason: dict[str, str], *, settings: Settings
) -> tuple[str, str] | None:
    """Record a refused message under ``vfx:refused`` and, when it is well formed (its run id the
    one its folder and settings give) and its video is not done, as that video's failure; the
    video it was filed under, if any. Never under a run the message merely names (see
    :mod:`vfx_tasks.queue.ledger`)."""
    ledger = get_ledger(settings)
    claimed = kwargs if isinstance(kwargs, dict) else {}
    ledger.record_refusal({
        "task_id": str(task_id)[:100],
        "run_id": str(claimed.get("run_id", ""))[:100],
        "relative_id": str(claimed.get("relative_id", ""))[:300],
        "code": reason["code"],
        "message": reason["message"][:2000],
        "at": time.time(),
    })
    key = ledger_key(kwargs)
    if key is not None and ledger.mark_refused(*key, reason):
        return key
    return None


def record_retry(key: tuple[str, str], *, settings: Settings) -> None:
    """The attempt ended in a transient error and will be retried: not a worker death."""
    get_ledger(settings).mark_retrying(*key)


def forget_ledgers() -> None:
    """Drop the ledger connections a forked child inherited: it must open its own."""
    _ledgers.clear()
