"""``vfx-worker``: a Celery worker pinned to one GPU, one per GPU under a supervisor, or on the CPU.

``celery -A vfx_tasks worker`` works too; this command adds GPU pinning, names and defaults. How
the worker processes are planned, started and supervised is :mod:`vfx_tasks.queue.processes.launch`.
A Redis that does not answer yet is waited for, with backoff (1, 2, 4... s, at most 30 s between
tries), saying so on each try; a malformed URL or a refused password stops it with exit code 2.
"""

from __future__ import annotations

import os

import click

from vfx_tasks.cli._help import GroupedCommand
from vfx_tasks.cli.errors import cli_error
from vfx_tasks.cli.options import (
    CONTEXT_SETTINGS,
    broker_url_option,
    concurrency_option,
    device_option,
    keep_downloads_option,
    option,
    pool_option,
    pretrained_dir_option,
    setting_option,
    version_option,
)
from vfx_tasks.errors import VfxError
from vfx_tasks.queue.connection import wait_for_redis
from vfx_tasks.queue.processes.launch import Launch, supervise, worker_launch, worker_name
from vfx_tasks.redaction import redact
from vfx_tasks.settings import Settings

EPILOG = """\b
Examples:
  vfx-worker --gpu 0                 # worker "gpu0@<host>", sees only GPU 0
  vfx-worker --gpus 0,1,2,3          # one worker per GPU, restarted if one dies
  vfx-worker --device cpu            # CPU-only machine
  vfx-worker --gpu 0 --pool threads -c 2   # two videos sharing one model
  vfx-worker --gpu 1 -- --max-tasks-per-child 100   # the rest goes to Celery
"""


def parse_gpus(value: str | None) -> list[int]:
    """``"0,1,3"`` -> ``[0, 1, 3]``; ``click.BadParameter`` for anything but distinct indices >= 0."""
    if not value:
        return []
    try:
        gpus = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of GPU indices, e.g. 0,1,2,3."
        ) from None
    if not gpus or any(gpu < 0 for gpu in gpus) or len(set(gpus)) != len(gpus):
        raise click.BadParameter(f"{value!r}: give distinct GPU indices >= 0, e.g. 0,1,2,3.")
    return gpus


def _gpus_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int]:
    return parse_gpus(value)


def check_gpus_visible(gpus: list[int]) -> None:
    """Refuse to start workers for GPUs this machine does not have (they would fail every task).

    Safe before ``exec``/spawning: the Celery worker is a new program, CUDA state does not carry over.
    """
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [gpu for gpu in gpus if gpu >= count]
    if missing:
        raise click.BadParameter(
            f"GPU {', '.join(map(str, missing))} not found: {count} GPU(s) visible. "
            "Use --device cpu on a machine without GPUs.",
            param_hint="--gpu/--gpus",
        )


def _check_pinning(gpu: int | None, gpus: list[int], device: str) -> list[int]:
    """The GPUs to pin workers to (none: one worker, unpinned), after refusing contradictions."""
    if gpu is not None and gpus:
        raise click.UsageError("Give either --gpu or --gpus, not both.")
    if gpu is not None and gpu < 0:
        raise click.BadParameter(f"{gpu} is not a GPU index; use 0, 1, ...", param_hint="--gpu")
    pinned = gpus or ([gpu] if gpu is not None else [])
    if pinned and device == "cpu":
        raise click.UsageError("--device cpu (or VFX_DEVICE=cpu) contradicts --gpu/--gpus; drop one of them.")
    if pinned:
        check_gpus_visible(pinned)
    return pinned


@click.command(
    "vfx-worker",
    cls=GroupedCommand,
    context_settings={**CONTEXT_SETTINGS, "ignore_unknown_options": True},
    epilog=EPILOG,
)
@option("--gpu", type=int, help="Pin this worker to one GPU (CUDA_VISIBLE_DEVICES).")
@option("--gpus", callback=_gpus_callback, help="Start and supervise one worker per GPU, e.g. 0,1,2,3.")
@device_option(help="cpu for CPU-only machines. Default: cuda with --gpu/--gpus, else auto.")
@broker_url_option()
@setting_option(
    "--result-backend", "--result_backend", field="result_backend",
    help="Result backend URL (default: the broker's Redis).",
)
@pretrained_dir_option(help="Folder with the model checkpoints.")
@concurrency_option(
    help="Videos in flight in this worker. Default: 4 per decoder with threads (one decoder per "
    "core, VFX_DECODERS), 1 with prefork."
)
@pool_option(
    help="threads (default on a GPU): one process, one model, one inference loop batching the "
    "clips of all its videos. prefork (default on the CPU): one process and model per video."
)
@option("--name", "-n", help="Worker name; default gpu<N>@<host> or cpu@<host>.")
@option("--loglevel", "-l", default="info")
@keep_downloads_option(help="Keep videos fetched from the Hub in its cache after use.")
@option("--dry-run", "--dry_run", is_flag=True, help="Print the plan, command and settings; start nothing.")
@version_option("vfx-worker")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def main(
    ctx: click.Context,
    *,
    gpu: int | None,
    gpus: list[int],
    device: str | None,
    broker_url: str | None,
    result_backend: str | None,
    pretrained_dir: str | None,
    concurrency: int | None,
    pool: str | None,
    name: str | None,
    loglevel: str,
    keep_downloads: bool | None,
    dry_run: bool,
    celery_args: tuple[str, ...],
) -> None:
    """Start Celery worker(s) that extract features from the queued videos.

    Arguments after the options (after --) go to celery worker.
    """
    try:
        settings = Settings.from_env(
            device=device,
            broker_url=broker_url,
            result_backend=result_backend,
            pretrained_dir=pretrained_dir,
            keep_downloads=keep_downloads,
        )
    except VfxError as e:
        raise cli_error(e) from e
    pinned = _check_pinning(gpu, gpus, settings.device)
    if pinned:
        settings = settings.with_overrides(device="cuda")

    def launch(gpu_index: int | None) -> Launch:
        hostname = worker_name(name, gpu=gpu_index, supervised=bool(gpus))
        plan, launched = worker_launch(
            settings, name=hostname, gpu=gpu_index, pool=pool, concurrency=concurrency,
            workers=max(1, len(gpus)), loglevel=loglevel, celery_args=celery_args,
        )
        click.echo(f"{hostname}: {plan.describe()}", err=True)
        if dry_run:
            _echo_launch(launched)
        return launched

    if dry_run:
        for index in gpus or [gpu]:
            launch(index)
        ctx.exit(0)
    try:
        # Said now, not at the first task, and waited for: a worker may start before its Redis.
        wait_for_redis(settings.broker_url, say=lambda line: click.echo(f"vfx-worker: {line}", err=True))
    except VfxError as e:
        raise cli_error(e) from e
    if gpus:
        ctx.exit(supervise([launch(index) for index in gpus]))
    command, environ = launch(gpu)
    # Become the Celery worker: signals from the terminal or a supervisor reach it directly.
    os.execvpe(command[0], command, environ)


def _echo_launch(launched: Launch) -> None:
    """The command line and the ``VFX_*`` environment of a launch, passwords masked."""
    command, environ = launched
    click.echo(" ".join(command))
    for key in sorted(k for k in environ if k.startswith("VFX_") or k == "CUDA_VISIBLE_DEVICES"):
        click.echo(redact(f"{key}={environ[key]}"))


if __name__ == "__main__":
    main()
