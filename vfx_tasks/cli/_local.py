"""``vfx-enqueue --local``: a private Redis and workers for one run, started and stopped around it."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from vfx_tasks.cli import EXIT_OK
from vfx_tasks.cli._plan_and_wait import EnqueueRequest, enqueue_and_maybe_wait
from vfx_tasks.models.files import checkpoint_path
from vfx_tasks.models.user_model import model_folders
from vfx_tasks.queue.processes.cluster import LocalCluster
from vfx_tasks.queue.processes.redis_server import RedisServer
from vfx_tasks.settings import Settings
from vfx_tasks.sources.base import LocalFolderSource
from vfx_tasks.sources.objects import ObjectStoreSource


def run_locally(
    settings: Settings, request: EnqueueRequest, *, concurrency: int | None, pool: str | None
) -> int:
    """Run ``request`` on this machine; the exit code. Nothing is left running afterwards."""
    if request.dry_run:
        # Nothing will run, so no workers; a fresh local Redis has no ledger, only files count.
        with RedisServer() as server:
            return enqueue_and_maybe_wait(settings.with_overrides(broker_url=server.url), request, wait=False)
    # The local workers read the weights from this machine: say now, not once per video, if
    # they are missing.
    checkpoint_path(request.run.recipe.model_spec(), settings.pretrained_dir)
    with _sigterm_as_ctrl_c():
        return _run_on_local_cluster(settings, request, concurrency=concurrency, pool=pool)


@contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt``: a ``kill`` cleans up like Ctrl-C."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_on_local_cluster(
    settings: Settings, request: EnqueueRequest, *, concurrency: int | None, pool: str | None
) -> int:
    """Redis first, to plan the run; workers (seconds, and a model load each) only if it has work."""
    source = request.source
    input_dir: str | Path | None = None  # Hub videos need none
    if isinstance(source, LocalFolderSource):
        input_dir = source.root
    elif isinstance(source, ObjectStoreSource):
        input_dir = source.url
    recipe = request.run.recipe
    # A run of a user's own config: its workers may read that config's files and weights, nothing else.
    model_roots = model_folders(recipe.model_config, recipe.checkpoint) if recipe.model_config else []
    cluster = LocalCluster(
        settings, output_dir=request.run.output_dir, input_dir=input_dir, model_roots=model_roots,
        concurrency=concurrency, pool=pool,
    )

    def start_workers() -> None:
        click.echo(f"Starting local workers (logs in {cluster.log_dir})...", err=True)
        cluster.start_workers()

    try:
        cluster.start_redis()
        url = cluster.broker_url
        code = enqueue_and_maybe_wait(
            settings.with_overrides(broker_url=url, result_backend=url),
            request,
            wait=True,
            check=cluster.check,
            before_enqueue=start_workers,
        )
    finally:
        cluster.stop()
    if code == EXIT_OK:
        shutil.rmtree(cluster.log_dir, ignore_errors=True)  # kept only when something failed
    return code
