"""``vfx-worker``: a Celery worker pinned to one GPU, one per GPU under a supervisor, or on the CPU.

    vfx-worker --gpu 0                 # worker "gpu0@<host>", sees only GPU 0
    vfx-worker --gpus 0,1,2,3          # one such worker per GPU, restarted if one dies
    vfx-worker --device cpu            # CPU-only machine
    vfx-worker --gpu 0 --pool threads -c 2   # two videos at once sharing one loaded model
    vfx-worker --gpu 1 -- --max-tasks-per-child 100   # anything after the options goes to Celery

``celery -A vfx_tasks worker`` works too; this command adds GPU pinning, names and defaults.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

import click

from vfx_tasks.cli import EXIT_UNAVAILABLE, EXIT_USAGE, POOLS
from vfx_tasks.errors import VfxError
from vfx_tasks.queue.ledger import connect
from vfx_tasks.settings import Settings

logger = logging.getLogger(__name__)

#: Seconds to wait before restarting a supervised worker that exited on its own.
RESTART_DELAY_SECONDS = 5.0


def parse_gpus(value: str | None) -> list[int]:
    """``"0,1,3"`` -> ``[0, 1, 3]``."""
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


def celery_worker_command(
    *, name: str, concurrency: int, loglevel: str, pool: str = "prefork", celery_args: tuple[str, ...] = ()
) -> list[str]:
    """The ``celery worker`` command line; ``celery_args`` come last so they override the defaults."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "vfx_tasks",
        "worker",
        "--hostname",
        name,
        "--concurrency",
        str(concurrency),
        "--pool",
        pool,
        "--task-events",
        "--loglevel",
        loglevel,
        *celery_args,
    ]


def torch_threads_per_process(settings: Settings, *, pool: str, concurrency: int) -> int:
    """Torch CPU threads for each pool process, so that a worker's processes share the cores.

    Torch starts one thread per core in every process: ``-c 4`` prefork processes would run four
    times as many threads as cores and lose time switching between them (on the CPU path the
    backbone runs on those threads). An explicit ``VFX_TORCH_THREADS`` wins; one process (``-c 1``
    or the threads pool) keeps torch's default.
    """
    if settings.torch_threads or pool != "prefork" or concurrency == 1:
        return settings.torch_threads
    return max(1, len(os.sched_getaffinity(0)) // concurrency)


def worker_environment(settings: Settings, *, gpu: int | None) -> dict[str, str]:
    """The environment of one worker: its settings as ``VFX_*`` and its GPU pinning."""
    environ = dict(os.environ)
    environ.update(settings.to_environ())
    if gpu is not None:
        environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    elif settings.device == "cpu":
        environ["CUDA_VISIBLE_DEVICES"] = ""
    return environ


def supervise(
    commands: list[tuple[list[str], dict[str, str]]], *, restart_delay_seconds: float = RESTART_DELAY_SECONDS
) -> int:
    """Run one process per command, restart those that exit on their own, forward SIGINT/SIGTERM.

    Returns once every process has exited after a stop signal: 0 if they all exited cleanly, else 1.
    """
    processes: list[subprocess.Popen[bytes]] = []
    restart_at: dict[int, float] = {}
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        # First signal: warm shutdown (finish or give back the task in flight); second: cold.
        forward = signal.SIGTERM if not stopping else signal.SIGQUIT
        stopping = True
        for process in processes:
            if process.poll() is None:
                process.send_signal(forward)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # Own sessions: a terminal's Ctrl-C reaches only this supervisor, which forwards it once.
    processes += [subprocess.Popen(command, env=env, start_new_session=True) for command, env in commands]
    while not (stopping and all(process.poll() is not None for process in processes)):
        for index, process in enumerate(processes):
            if stopping or process.poll() is None:
                continue
            if index not in restart_at:
                logger.warning(
                    "Worker %d exited with %s; restarting in %.0f s",
                    index,
                    process.returncode,
                    restart_delay_seconds,
                )
                restart_at[index] = time.monotonic() + restart_delay_seconds
            elif time.monotonic() >= restart_at[index]:
                del restart_at[index]
                command, env = commands[index]
                processes[index] = subprocess.Popen(command, env=env, start_new_session=True)
        time.sleep(0.2)
    return 0 if all(process.returncode in (0, -signal.SIGTERM) for process in processes) else 1


# fmt: off
@click.command(context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]})
@click.option("--gpu", envvar="VFX_GPU", type=int, help="Pin this worker to one GPU (CUDA_VISIBLE_DEVICES).")
@click.option("--gpus", envvar="VFX_GPUS", help="Start and supervise one worker per GPU, e.g. 0,1,2,3.")
@click.option("--device", envvar="VFX_DEVICE", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="cpu for CPU-only machines. Default: cuda with --gpu/--gpus, else auto.")
@click.option("--broker-url", "--broker_url", envvar="VFX_BROKER_URL", help="Redis URL of the queue.")
@click.option("--result-backend", "--result_backend", envvar="VFX_RESULT_BACKEND",
              help="Result backend URL (default: the broker's Redis).")
@click.option("--pretrained-dir", "--pretrained_dir", envvar="VFX_PRETRAINED_DIR",
              type=click.Path(file_okay=False), help="Folder with the model checkpoints.")
@click.option("--concurrency", "-c", envvar="VFX_CONCURRENCY", type=click.IntRange(min=1), default=1,
              show_default=True, help="Videos processed at once by this worker (see --pool).")
@click.option("--pool", envvar="VFX_POOL", type=click.Choice(POOLS), default="prefork", show_default=True,
              help="prefork: one process per video in flight, each with its own model. "
                   "threads: one process whose videos share one model (less GPU memory).")
@click.option("--name", "-n", envvar="VFX_WORKER_NAME",
              help="Worker name; default gpu<N>@<host> or cpu@<host>.")
@click.option("--loglevel", "-l", envvar="VFX_LOGLEVEL", default="info", show_default=True)
@click.option("--keep-downloads", "--keep_downloads", "keep_downloads", envvar="VFX_KEEP_DOWNLOADS",  # noqa: E501
              is_flag=True, default=None, help="Keep videos fetched from the Hub in its cache after use.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
# fmt: on
def main(
    gpu: int | None,
    gpus: str | None,
    device: str | None,
    broker_url: str | None,
    result_backend: str | None,
    pretrained_dir: str | None,
    concurrency: int,
    pool: str,
    name: str | None,
    loglevel: str,
    keep_downloads: bool | None,
    celery_args: tuple[str, ...],
) -> None:
    """Start Celery worker(s) that extract features from the queued videos."""
    gpu_list = parse_gpus(gpus)
    if gpu is not None and gpu_list:
        raise click.UsageError("Give either --gpu or --gpus, not both.")
    if gpu is not None and gpu < 0:
        raise click.BadParameter(f"{gpu} is not a GPU index; use 0, 1, ...", param_hint="--gpu")
    pinned = gpu is not None or bool(gpu_list)
    if pinned and device == "cpu":
        raise click.UsageError("--device cpu contradicts --gpu/--gpus; drop one of them.")
    if pinned:
        check_gpus_visible(gpu_list or [gpu])  # type: ignore[list-item]
    try:
        settings = Settings.from_env(
            device=device or ("cuda" if pinned else None),
            broker_url=broker_url,
            result_backend=result_backend,
            pretrained_dir=pretrained_dir,
            keep_downloads=keep_downloads or None,
        )
        settings = settings.with_overrides(
            torch_threads=torch_threads_per_process(settings, pool=pool, concurrency=concurrency)
        )
        connect(settings.broker_url).close()
    except VfxError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(EXIT_UNAVAILABLE if e.code == "broker_unavailable" else EXIT_USAGE)

    def command_for(gpu_index: int | None) -> tuple[list[str], dict[str, str]]:
        if gpu_list and name:
            worker_name = f"{name}-gpu{gpu_index}"  # distinct names under one supervisor
        else:
            worker_name = name or (f"gpu{gpu_index}@%h" if gpu_index is not None else "cpu@%h")
        command = celery_worker_command(
            name=worker_name, concurrency=concurrency, loglevel=loglevel, pool=pool, celery_args=celery_args
        )
        return command, worker_environment(settings, gpu=gpu_index)

    if gpu_list:
        sys.exit(supervise([command_for(index) for index in gpu_list]))
    command, environ = command_for(gpu)
    # Become the Celery worker: signals from the terminal or a supervisor reach it directly.
    os.execvpe(command[0], command, environ)


if __name__ == "__main__":
    main()
