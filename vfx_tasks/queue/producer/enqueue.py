"""Deciding which videos still need work, and queueing them fast.

A video is skipped (unless ``force``) when it is listed in the ``--check_progress`` file, when its
output file is present and valid, or when the done-ledger says so and the output folder is not
visible from this machine (workers may write to storage the producer cannot see). A done entry
whose output file is gone from a visible output folder is dropped, and the video queued again.

A local output folder is checked file by file (each ``.npy``'s header and size). An output folder
in object storage is listed once (1,000 objects a request on S3): an object is never partial, so
its listed size, checked against the size ``np.save`` gives the expected shape, stands for its
header; a worker reads the header itself before it skips a video.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Producer, Queue

from vfx_tasks.errors import BrokerUnavailableError
from vfx_tasks.extract.crops import num_crops
from vfx_tasks.queue.app import EXTRACT_VIDEO_TASK
from vfx_tasks.queue.job import Job, Run
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.producer.interrupts import deferred_interrupts
from vfx_tasks.queue.recovery.internals import publish_batch, queued_task_ids
from vfx_tasks.sources.base import VideoItem, normalize_relative_id
from vfx_tasks.storage import (
    features_match,
    header_from_size,
    is_url,
    is_valid_output,
    list_objects,
    output_path,
)

logger = logging.getLogger(__name__)

#: Videos claimed and sent per Redis round trip of claims.
CLAIM_CHUNK = 1000


@dataclass
class Plan:
    """What one ``vfx-enqueue`` found: videos to queue and why the others were skipped."""

    to_queue: list[VideoItem] = field(default_factory=list)
    skipped_output_exists: int = 0
    skipped_check_progress: int = 0
    skipped_ledger_done: int = 0
    total_found: int = 0

    @property
    def skipped(self) -> int:
        return self.skipped_output_exists + self.skipped_check_progress + self.skipped_ledger_done


@dataclass
class EnqueueResult:
    """Videos this producer queued, and those another producer (or an earlier run) already had queued."""

    #: Sent by this producer, ``resent`` included.
    queued: list[str] = field(default_factory=list)
    #: Claimed by an earlier run whose message had been lost, and sent again now.
    resent: list[str] = field(default_factory=list)
    #: Claimed earlier and waiting in the queue, or running.
    already_queued: list[str] = field(default_factory=list)
    #: Ctrl-C / SIGTERM stopped the sending before every video was queued.
    interrupted: bool = False


def read_check_progress(path: str | os.PathLike[str] | None) -> set[str]:
    """Relative ids listed in a ``--check_progress`` file (missing file: none)."""
    if path is None or not Path(path).is_file():
        return set()
    with open(path, encoding="utf-8") as f:
        return {normalize_relative_id(line) for line in f if line.strip()}


def append_check_progress(path: str | os.PathLike[str], relative_ids: Iterable[str]) -> None:
    """Append finished videos to a ``--check_progress`` file, one ``<relative_dir>/<id>`` per line."""
    ids = list(relative_ids)
    if not ids:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(f"{relative_id}\n" for relative_id in ids)


def plan_videos(
    items: Iterable[VideoItem],
    *,
    run: Run,
    ledger: Ledger,
    check_progress: set[str],
    force: bool = False,
    max_videos: int = -1,
    storage_options: Mapping[str, Any] | None = None,
) -> Plan:
    """Sort videos into those to queue (at most ``max_videos`` unless -1) and those already done.

    ``storage_options`` are the object-storage client's, for an output folder at a URL.

    Raises:
        StorageAccessError: the output folder's bucket cannot be listed (nothing is queued).
    """
    plan = Plan()
    has_valid_output = None if force else valid_output_check(run, storage_options)
    output_visible = is_url(run.output_dir) or Path(run.output_dir).is_dir()
    done_in_ledger = set() if force else ledger.done_ids(run.run_id)
    stale: list[str] = []
    for item in items:
        plan.total_found += 1
        if max_videos != -1 and len(plan.to_queue) >= max_videos:
            continue  # keep counting what was found
        if not force:
            if item.relative_id in check_progress:
                plan.skipped_check_progress += 1
                continue
            if output_visible and has_valid_output is not None and has_valid_output(item.relative_id):
                plan.skipped_output_exists += 1
                continue
            if item.relative_id in done_in_ledger:
                if not output_visible:
                    plan.skipped_ledger_done += 1
                    continue
                stale.append(item.relative_id)
        plan.to_queue.append(item)
    ledger.forget_done(run.run_id, stale)
    return plan


def valid_output_check(run: Run, storage_options: Mapping[str, Any] | None) -> Callable[[str], bool]:
    """Whether a video of ``run`` has a valid output: one listing for a URL, a header per file else."""
    shape = {
        "n_crops": num_crops(run.recipe.crop_type),
        "feature_dim": run.recipe.model_spec().feature_dim,
        "num_clips_per_video": run.recipe.num_clips_per_video,
    }
    if not is_url(run.output_dir):
        return lambda relative_id: is_valid_output(output_path(run.output_dir, relative_id), **shape)
    valid = {
        name[: -len(".npy")]
        for name, info in list_objects(run.output_dir, storage_options=storage_options).items()
        if name.endswith(".npy") and features_match(header_from_size(info.st_size, **shape), **shape)
    }
    return valid.__contains__


def _chunks(items: list[VideoItem], size: int) -> Iterator[list[VideoItem]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def enqueue_videos(
    app: Celery,
    ledger: Ledger,
    run: Run,
    items: list[VideoItem],
    *,
    force: bool = False,
) -> EnqueueResult:
    """Claim each video in the ledger and send a task for those this producer claimed.

    A claim does not prove that its message exists: a producer killed between the two, or a Redis
    that restarted without its last writes, leaves claims without messages. So a video claimed
    earlier that is neither running nor done, and whose task id is neither in the queue nor held
    by a worker, is sent again (``resent``). Task ids are deterministic, and a worker acknowledges
    a message for a video already done without work, so a second message is harmless.

    Ctrl-C or SIGTERM stops after the chunk being sent, whose messages are flushed: every claim
    then has its message, and ``interrupted`` is set. Uses one broker connection and never
    subscribes to results, so 100,000 videos take seconds.

    Raises:
        BrokerUnavailableError: Redis went away; the claims of videos not sent are released.
    """
    ledger.register_run(run)
    result = EnqueueResult()
    queue = app.amqp.queues[app.conf.task_default_queue]
    queued_ids: set[str] | None = None  # read once, and only if some claim needs checking
    with app.producer_or_acquire() as producer, deferred_interrupts() as interrupted:
        # Declare the queue once, not once per message.
        producer.maybe_declare(queue)
        for chunk in _chunks(items, CLAIM_CHUNK):
            if interrupted():
                break
            claimed = ledger.claim(run, [item.relative_id for item in chunk], force=force)
            to_send = [item for item, got in zip(chunk, claimed, strict=True) if got]
            others = [item.relative_id for item, got in zip(chunk, claimed, strict=True) if not got]
            maybe_lost = ledger.claims_not_started(run.run_id, others)
            if maybe_lost and queued_ids is None:
                queued_ids = queued_task_ids(app, queue.name)
            lost = {r for r in maybe_lost if run.task_id(r) not in (queued_ids or set())}
            to_send += [item for item in chunk if item.relative_id in lost]
            _send(app, producer, queue, ledger, run, to_send, sent=len(result.queued))
            result.queued += [item.relative_id for item in to_send]
            result.resent += [r for r in others if r in lost]
            result.already_queued += [r for r in others if r not in lost]
        result.interrupted = interrupted()
    return result


def _send(
    app: Celery,
    producer: Producer,
    queue: Queue,
    ledger: Ledger,
    run: Run,
    items: list[VideoItem],
    *,
    sent: int,
) -> None:
    """Send one task per video in one Redis round trip; on failure release the videos' claims."""
    amqp = app.amqp
    try:
        with publish_batch(producer, max_size=CLAIM_CHUNK):
            for item in items:
                # Celery's message API under ``send_task``, minus its per-call routing work;
                # the reprs are given because Celery's safe repr costs more than the send.
                message = amqp.create_task_message(
                    run.task_id(item.relative_id),
                    EXTRACT_VIDEO_TASK,
                    (),
                    job_of(run, item).to_message(),
                    argsrepr="()",
                    kwargsrepr=repr({"relative_id": item.relative_id}),
                )
                # retry=False: a batch is written at its end, and failures surface there.
                amqp.send_task_message(
                    producer, EXTRACT_VIDEO_TASK, message, queue=queue, declare=[], retry=False
                )
    except Exception as e:  # kombu raises many kinds; none may leave claims dangling
        _release_quietly(ledger, run.run_id, [item.relative_id for item in items])
        raise BrokerUnavailableError(
            f"Lost the broker at {app.conf.broker_url} after queueing {sent} videos ({e}). "
            "Run vfx-enqueue again to queue the rest."
        ) from e
    except BaseException:
        # A second Ctrl-C: the batch was dropped unsent. Releasing is tidier than leaving the
        # claims to the next run's repair, and must not hide the interrupt.
        _release_quietly(ledger, run.run_id, [item.relative_id for item in items])
        raise


def _release_quietly(ledger: Ledger, run_id: str, relative_ids: list[str]) -> None:
    try:
        ledger.release(run_id, relative_ids)
    except BrokerUnavailableError:
        logger.warning(
            "Could not release %d claims; the next vfx-enqueue of this run sends them again",
            len(relative_ids),
        )


def job_of(run: Run, item: VideoItem) -> Job:
    """The job of one listed video in ``run``."""
    return Job.create(run, relative_id=item.relative_id, video_path=item.path, labels=item.labels)
