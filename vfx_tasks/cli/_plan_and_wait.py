"""``vfx-enqueue``'s run against one Redis: plan what to queue, queue it, wait for it, report."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import click

from vfx_tasks.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from vfx_tasks.cli._manifest import claim_output_dir_for_run, output_folder
from vfx_tasks.cli._output_folder import write_index_from_ledger
from vfx_tasks.cli._progress import ProgressBar, format_duration
from vfx_tasks.errors import WaitTimeoutError
from vfx_tasks.outputs.manifest import read_manifest
from vfx_tasks.queue.app import create_app
from vfx_tasks.queue.job import Run
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.producer.enqueue import (
    EnqueueResult,
    Plan,
    append_check_progress,
    enqueue_videos,
    plan_videos,
    read_check_progress,
)
from vfx_tasks.queue.producer.wait import WaitOutcome, wait_for_videos
from vfx_tasks.redaction import redact
from vfx_tasks.settings import Settings
from vfx_tasks.sources.base import VideoSource
from vfx_tasks.storage import is_url


@dataclass(frozen=True)
class EnqueueRequest:
    """What to queue and how to follow it: everything of a ``vfx-enqueue`` run but where it runs."""

    run: Run
    source: VideoSource
    check_progress: str | None
    force: bool
    dry_run: bool
    max_videos: int
    poll_seconds: float
    wait_timeout: float | None


def enqueue_and_maybe_wait(
    settings: Settings,
    request: EnqueueRequest,
    *,
    wait: bool,
    check: Callable[[], None] | None = None,
    before_enqueue: Callable[[], None] | None = None,
) -> int:
    """Plan, queue and optionally wait; the exit code.

    ``before_enqueue`` runs only when there is something to queue; ``check`` runs at every poll
    while waiting and may raise to stop the wait.
    """
    ledger = Ledger.from_url(settings.broker_url)
    claim_output_dir_for_run(request.run, settings, force=request.force, dry_run=request.dry_run)
    plan = _plan(ledger, request, settings)
    if request.dry_run:
        for item in plan.to_queue:
            click.echo(item.relative_id)
        click.echo(
            f"Would queue {len(plan.to_queue)} of {plan.total_found} videos (skipping {_skipped(plan)}).",
            err=True,
        )
        return EXIT_OK
    if before_enqueue is not None and plan.to_queue:
        before_enqueue()
    result = _queue(settings, ledger, request, plan)
    if result.interrupted:
        return EXIT_INTERRUPTED
    watched = result.queued + result.already_queued
    if not wait:
        return EXIT_OK
    if not watched:
        click.echo("Nothing to wait for: every video is done already.", err=True)
        _write_object_index(ledger, request.run, settings)
        return EXIT_OK
    code = _report(_wait(ledger, request, watched, check=check))
    _write_object_index(ledger, request.run, settings)
    return code


def _write_object_index(ledger: Ledger, run: Run, settings: Settings) -> None:
    """Object storage cannot append, so its ``index.csv`` is written whole once the run has ended,
    from one listing and the ledger's done summaries (a local folder's grows as videos finish)."""
    if not is_url(run.output_dir):
        return
    with output_folder(run.output_dir, settings) as folder:
        manifest = read_manifest(folder)
        if manifest is not None:
            rows = write_index_from_ledger(ledger, folder, manifest, [run.run_id])
            click.echo(f"Wrote {run.output_dir}/index.csv ({len(rows)} rows).", err=True)


def _plan(ledger: Ledger, request: EnqueueRequest, settings: Settings) -> Plan:
    """Which videos to queue; says how the source listed them and what it left out."""
    source = request.source
    plan = plan_videos(
        source.iter_videos(),
        run=request.run,
        ledger=ledger,
        check_progress=read_check_progress(request.check_progress),
        force=request.force,
        max_videos=request.max_videos,
        storage_options=settings.storage_kwargs(),
    )
    if source.rejected:
        click.echo(
            f"Left out {len(source.rejected)} remote file(s) with unsafe names (see the warnings).", err=True
        )
    if source.listed_with is not None:
        click.echo(
            f"Listed {source!r} through {source.listed_with} (commit {source.resolve_commit()}).", err=True
        )
    return plan


def _skipped(plan: Plan) -> str:
    return (
        f"{plan.skipped_output_exists} with valid output, {plan.skipped_check_progress} in "
        f"--check_progress, {plan.skipped_ledger_done} done in the ledger"
    )


def _queue(settings: Settings, ledger: Ledger, request: EnqueueRequest, plan: Plan) -> EnqueueResult:
    """Send the planned tasks, and say what was sent (or, when interrupted, what is left)."""
    app = create_app(settings, producer_only=True)
    run = request.run
    result = enqueue_videos(app, ledger, run, plan.to_queue, force=request.force)
    if result.interrupted:
        already = f" ({len(result.already_queued):,} were already queued)" if result.already_queued else ""
        click.echo(
            f"Interrupted after queueing {len(result.queued):,} of {len(plan.to_queue):,} videos{already}; "
            "run the same command again to queue the rest.",
            err=True,
        )
        return result
    resent = f" ({len(result.resent)} sent again: their earlier messages were lost)" if result.resent else ""
    click.echo(
        f"Queued {len(result.queued)} of {plan.total_found} videos{resent}; "
        f"{len(result.already_queued)} were already queued; skipped {_skipped(plan)}. "
        f"Run {run.run_id}, output {run.output_dir}.",
        err=True,
    )
    return result


def _wait(
    ledger: Ledger, request: EnqueueRequest, watched: list[str], *, check: Callable[[], None] | None
) -> WaitOutcome:
    """Follow ``watched`` until each is done or failed, or ``--wait-timeout`` passes."""
    wait_timeout, check_progress = request.wait_timeout, request.check_progress
    deadline = None if wait_timeout is None else time.monotonic() + wait_timeout

    def check_running() -> None:
        if check is not None:
            check()
        if deadline is not None and time.monotonic() > deadline:
            raise WaitTimeoutError(
                f"Stopped waiting after {wait_timeout:g} s; the unfinished videos stay queued "
                f"(see vfx-status --output_dir {request.run.output_dir})."
            )

    with ProgressBar(len(set(watched)), sys.stderr) as bar:
        return wait_for_videos(
            ledger,
            request.run.run_id,
            watched,
            view=bar,
            poll_seconds=request.poll_seconds,
            on_done=(lambda ids: append_check_progress(check_progress, ids)) if check_progress else None,
            check=check_running,
        )


def _report(outcome: WaitOutcome) -> int:
    click.echo(
        f"{len(outcome.done)} done, {len(outcome.failed)} failed of {outcome.total} in "
        f"{format_duration(outcome.seconds)} ({outcome.clips} clips).",
        err=True,
    )
    for relative_id, reason in sorted(outcome.failed.items()):
        click.echo(redact(f"FAILED {relative_id}: [{reason.get('code')}] {reason.get('message')}"), err=True)
    return EXIT_FAILED if outcome.failed else EXIT_OK
