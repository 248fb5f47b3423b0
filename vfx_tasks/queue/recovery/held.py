"""The one way to tell which video a delivery is for: by task id, from the ledger, never from the message.

A video's task id is computed from its run's description in the ledger and its relative id
(:meth:`~vfx_tasks.queue.job.Run.task_id`); a delivery names its task id in kombu's record of it.
What the message's arguments say is never used to find a video: anyone who can write to Redis can
forge those. The recoveries that change a video's ledger entries when they put its message back
(:mod:`.orphans`, :mod:`.sweeper`) and ``vfx-status`` (:mod:`.stranded`) all go through here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vfx_tasks.queue.job import Run
from vfx_tasks.queue.ledger import Ledger


@dataclass(frozen=True)
class RunningVideo:
    """A video the ledger shows running on ``worker``."""

    run_id: str
    relative_id: str
    worker: str


def runs_by_id(ledger: Ledger, run_ids: set[str]) -> dict[str, Run]:
    """The runs of these ids whose description in the ledger is a producer's (see :meth:`Run.from_meta`)."""
    return {
        meta["run_id"]: run
        for meta in ledger.runs()
        if meta["run_id"] in run_ids and (run := Run.from_meta(meta)) is not None
    }


def running_by_task_id(
    ledger: Ledger, *, on: Callable[[str], bool] = lambda _: True
) -> dict[str, RunningVideo]:
    """``task id -> RunningVideo`` of the videos the ledger shows running on workers that ``on`` accepts."""
    running = {
        (run_id, relative_id): worker
        for run_id, videos in ledger.running_everywhere().items()
        for relative_id, worker in videos.items()
        if on(worker)
    }
    if not running:
        return {}
    runs = runs_by_id(ledger, {run_id for run_id, _ in running})
    return {
        run.task_id(relative_id): RunningVideo(run_id, relative_id, worker)
        for (run_id, relative_id), worker in running.items()
        if (run := runs.get(run_id)) is not None
    }
