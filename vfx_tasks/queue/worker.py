"""The work of one task without Celery around it, and the worker process's signal handlers.

A process's models and inference loops are kept in :mod:`vfx_tasks.queue._models`; its ledger
connection here. With Celery's ``threads`` pool several tasks run at once in one process and
share both.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from celery.signals import (
    celeryd_after_setup,
    task_received,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from vfx_tasks.errors import WorkerDiedError
from vfx_tasks.extract.crops import num_crops
from vfx_tasks.extract.decoders import DEFAULT_DECODER
from vfx_tasks.models import get_model_spec
from vfx_tasks.queue._message import check_job
from vfx_tasks.queue._models import extract_job, forget_models, release_models
from vfx_tasks.queue._outputs import check_job_settings, record_index_row
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.recovery import Reconciler, held_task, requeue_orphaned_tasks
from vfx_tasks.settings import Settings
from vfx_tasks.sources.fetch import fetched_video
from vfx_tasks.storage import (
    is_valid_output,
    labels_path,
    output_path,
    remove_temp_files_of,
    write_features_atomic,
    write_labels_atomic,
)

logger = logging.getLogger(__name__)

_ledgers: dict[str, Ledger] = {}
#: Guards the cache above: with the threads pool, tasks start side by side.
_ledgers_lock = threading.Lock()


@dataclass(frozen=True)
class VideoJob:
    """The arguments of one ``vfx.extract_video`` task (JSON primitives only)."""

    video_path: str
    output_dir: str
    relative_id: str
    run_id: str
    model: str
    crop_type: str
    clip_sampling: str
    num_clips_per_video: int
    batch_size: int
    precision: str
    #: Labels that came with the video (Hugging Face sources), written beside the features as JSON.
    labels: dict[str, Any] | None = None
    #: Messages from before the choice carry none: they were decoded with decord.
    decoder: str = DEFAULT_DECODER


def get_ledger(settings: Settings) -> Ledger:
    """The process's ledger connection (created after fork, never shared with the parent)."""
    with _ledgers_lock:
        if settings.broker_url not in _ledgers:
            _ledgers[settings.broker_url] = Ledger.from_url(settings.broker_url)
        return _ledgers[settings.broker_url]


def process_video(job: VideoJob, *, settings: Settings, worker_name: str) -> dict[str, Any]:
    """Extract one video's features, write them atomically, record them as done; return the summary.

    Raises:
        WorkerDiedError: earlier attempts on this video died more than ``max_redeliveries`` times.
        PermanentError: the video or the configuration cannot work; retrying will not help.
        TransientError: worth retrying (I/O, Redis, out of memory at one clip).
        UntrustedMessageError: the message names paths outside the roots or values out of bounds.
    """
    check_job(job, settings=settings)  # before anything is read, written or recorded
    ledger = get_ledger(settings)
    if (duplicate := skip_if_done(job, ledger)) is not None:
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
        # The attempt that died may have been writing: its temporary files are nobody's now.
        for leftover in remove_temp_files_of(job.output_dir, job.relative_id):
            logger.info("%s: removed %s, left by the attempt that died", job.relative_id, leftover.name)
    check_job_settings(job, settings=settings)
    destination = output_path(job.output_dir, job.relative_id)
    with fetched_video(job.video_path, keep_downloads=settings.keep_downloads) as video_path:
        result = extract_job(job, video_path, settings=settings)
        # Labels first: a video counts as done once its .npy exists, and then its labels must too.
        if job.labels is not None:
            write_labels_atomic(labels_path(job.output_dir, job.relative_id), job.labels)
        write_features_atomic(destination, result.features)
    record_index_row(job, result)
    summary = {
        "relative_id": job.relative_id,
        "output": str(destination),
        "shape": list(result.shape),
        "num_frames": result.num_frames,
        "fps": result.fps,
        "seconds": round(result.seconds, 3),
        "worker": worker_name,
    }
    ledger.mark_done(job.run_id, job.relative_id, summary)
    return summary


def skip_if_done(job: VideoJob, ledger: Ledger) -> dict[str, Any] | None:
    """A summary if this message repeats one for a video done with a valid output, else ``None``.

    A rerun of ``vfx-enqueue`` sends a video again when it cannot find its message (see
    :func:`vfx_tasks.queue.producer.enqueue_videos`), so two messages may exist for one video.
    The second is acknowledged here without work, without counting as an attempt and without
    writing the output again. A done entry whose file is gone or invalid is computed again.
    """
    if not ledger.is_done(job.run_id, job.relative_id):
        return None
    destination = output_path(job.output_dir, job.relative_id)
    valid = is_valid_output(
        destination,
        n_crops=num_crops(job.crop_type),  # type: ignore[arg-type]
        feature_dim=get_model_spec(job.model).feature_dim,
        num_clips_per_video=job.num_clips_per_video,
    )
    if not valid:
        return None
    # The message may come with a fresh claim (a producer that planned before the video ended):
    # drop it, or the video would count as queued forever.
    ledger.release(job.run_id, [job.relative_id])
    logger.info("%s: already done with a valid output; acknowledged without work", job.relative_id)
    return {"relative_id": job.relative_id, "output": str(destination), "skipped": "already done"}


def record_failure(job: VideoJob, reason: dict[str, str], *, settings: Settings) -> None:
    """Record a final failure in the ledger (the result backend keeps it too, through Celery)."""
    get_ledger(settings).mark_failed(job.run_id, job.relative_id, reason)


def record_retry(job: VideoJob, *, settings: Settings) -> None:
    """The attempt ended in a transient error and will be retried: not a worker death."""
    get_ledger(settings).mark_retrying(job.run_id, job.relative_id)


@worker_process_init.connect
def _forget_inherited_state(**_: Any) -> None:
    # A forked child must build its own model and Redis connections; never reuse the parent's.
    forget_models()
    _ledgers.clear()


@worker_process_init.connect
def _import_the_pipeline(**_: Any) -> None:
    # Import torch, decord and mmaction2 now, not in the first task: a task's time limits start
    # with it, and a soft limit that lands in a library's own import-time ``except Exception``
    # is swallowed there, which would let a hung task run on to the hard limit.
    from vfx_tasks.extract import pipeline  # noqa: F401
    from vfx_tasks.models._mmaction_compat import import_mmaction_backbones

    import_mmaction_backbones()


@worker_process_shutdown.connect
def _release_models(**_: Any) -> None:
    release_models()


@celeryd_after_setup.connect
def _say_which_folders_tasks_may_use(sender: str, **_: Any) -> None:
    from vfx_tasks.queue.app import settings

    # Said once at start, so that an operator learns it before every video fails with the reason.
    if not settings.output_roots:
        logger.warning(
            "%s: VFX_OUTPUT_ROOTS is not set, so every task will be refused. Set it (and VFX_INPUT_ROOTS) "
            "to the folders this worker may write to (and read from).", sender
        )
    reads, writes = (
        os.pathsep.join(map(str, roots)) or "-" for roots in (settings.input_roots, settings.output_roots)
    )
    logger.info("%s: reads videos under %s, writes features under %s", sender, reads, writes)


@celeryd_after_setup.connect
def _take_back_orphaned_tasks(sender: str, **_: Any) -> None:
    # Runs in the worker's main process before it consumes (see vfx_tasks.queue.recovery).
    from vfx_tasks.queue.app import app, settings

    try:
        requeue_orphaned_tasks(app, Ledger.from_url(settings.broker_url), sender)
    except Exception as e:
        # Never keep a worker from starting over this: it is best effort, and the visibility
        # timeout still brings the videos back.
        logger.warning("Could not look for videos an earlier run of %s left unfinished: %s", sender, e)


#: The worker main process's reconciler (see vfx_tasks.queue.recovery), once the worker is set up.
_reconciler: Reconciler | None = None


def _in_flight_delivery_tags() -> set[str]:
    """Delivery tags of the requests this worker holds reserved or is running (consumer state)."""
    from celery.worker import state

    for _ in range(10):
        try:  # the consumer's thread changes these sets; a copy may catch one mid-change
            requests = [*state.reserved_requests, *state.active_requests]
            break
        except RuntimeError:
            continue
    else:
        raise RuntimeError("the worker's request sets kept changing")
    return {str(request.message.delivery_tag) for request in requests}


@celeryd_after_setup.connect
def _watch_deliveries(sender: str, **_: Any) -> None:
    # Before the worker consumes, so that it sees every delivery it gets.
    from vfx_tasks.queue.app import app, settings

    global _reconciler
    _reconciler = Reconciler(app, sender, ledger_url=settings.broker_url, in_flight=_in_flight_delivery_tags)


@task_received.connect
def _remember_delivery(request: Any, **_: Any) -> None:
    if _reconciler is not None:
        _reconciler.received(held_task(request.message.delivery_tag, request.kwargs))


@worker_ready.connect
def _start_reconciling(**_: Any) -> None:
    # After the pool started: no thread of ours is running when prefork children are forked.
    if _reconciler is not None:
        _reconciler.start()


@worker_shutdown.connect
def _stop_reconciling(**_: Any) -> None:
    if _reconciler is not None:
        _reconciler.stop()
