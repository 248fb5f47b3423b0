"""``vfx-worker``: a Celery worker pinned to one GPU, one per GPU under a supervisor, or on the CPU.

``celery -A vfx_tasks worker`` works too; this command adds GPU pinning, names and defaults. How
the worker processes are started and supervised is :mod:`vfx_tasks.queue.launch`.
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
    version_option,
)
from vfx_tasks.errors import VfxError
from vfx_tasks.queue.connection import connect
from vfx_tasks.queue.launch import (
    Launch,
    celery_worker_command,
    plan_worker,
    supervise,
    worker_environment,
    worker_name,
)
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


def _check_pinning(gpu: int | None, gpus: list[int], device: str | None) -> list[int]:
    """The GPUs to pin workers to (none: one worker, unpinned), after refusing contradictions."""
    if gpu is not None and gpus:
        raise click.UsageError("Give either --gpu or --gpus, not both.")
    if gpu is not None and gpu < 0:
        raise click.BadParameter(f"{gpu} is not a GPU index; use 0, 1, ...", param_hint="--gpu")
    pinned = gpus or ([gpu] if gpu is not None else [])
    if pinned and device == "cpu":
        raise click.UsageError("--device cpu contradicts --gpu/--gpus; drop one of them.")
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
@device_option(default=None, help="cpu for CPU-only machines. Default: cuda with --gpu/--gpus, else auto.")
@broker_url_option()
@option("--result-backend", "--result_backend", help="Result backend URL (default: the broker's Redis).")
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
    celery_args: tuple[str, ...],
) -> None:
    """Start Celery worker(s) that extract features from the queued videos.

    Arguments after the options (after --) go to celery worker.
    """
    pinned = _check_pinning(gpu, gpus, device)
    try:
        settings = Settings.from_env(
            device=device or ("cuda" if pinned else None),
            broker_url=broker_url,
            result_backend=result_backend,
            pretrained_dir=pretrained_dir,
            keep_downloads=keep_downloads or None,
        )
        connect(settings.broker_url).close()  # say now, not at the first task, that Redis is unreachable
    except VfxError as e:
        raise cli_error(e) from e
    plan = plan_worker(
        settings,
        pool=pool,
        concurrency=concurrency,
        uses_gpu=bool(pinned) or settings.device.startswith("cuda"),
        workers=max(1, len(gpus)),
    )
    settings = settings.with_overrides(
        torch_threads=plan.torch_threads, decoders=plan.decoders, decoder_threads=plan.decoder_threads
    )

    def launch(gpu_index: int | None) -> Launch:
        hostname = worker_name(name, gpu=gpu_index, supervised=bool(gpus))
        click.echo(f"{hostname}: {plan.describe()}", err=True)
        command = celery_worker_command(
            name=hostname,
            concurrency=plan.concurrency,
            loglevel=loglevel,
            pool=plan.pool,
            celery_args=celery_args,
        )
        return command, worker_environment(settings, gpu=gpu_index)

    if gpus:
        ctx.exit(supervise([launch(index) for index in gpus]))
    command, environ = launch(gpu)
    # Become the Celery worker: signals from the terminal or a supervisor reach it directly.
    os.execvpe(command[0], command, environ)


if __name__ == "__main__":
    main()
