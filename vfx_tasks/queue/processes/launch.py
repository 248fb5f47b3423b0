"""How a worker process is started: its plan, its command line, its environment, its supervision.

``vfx-worker`` and ``vfx-enqueue --local`` both start workers through :func:`worker_launch`: a
``celery worker`` program (a new interpreter, so no CUDA state is inherited) whose settings travel
as ``VFX_*`` variables and whose GPU is pinned with ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType
from typing import Literal, get_args

from vfx_tasks.settings import Settings

logger = logging.getLogger(__name__)

#: The Celery pools a worker may run (``--pool``), each with ``--concurrency`` videos in flight.
#: ``prefork``: one process per video in flight, each loading its own model; a crash in one video
#: takes down only its process. ``threads``: one process whose videos share one model (less
#: device memory); a crash stops the whole worker, and its tasks are redelivered.
Pool = Literal["prefork", "threads"]
POOLS: tuple[Pool, ...] = get_args(Pool)

#: Seconds to wait before restarting a supervised worker that exited on its own.
RESTART_DELAY_SECONDS = 5.0

#: A process to start: its command line and its complete environment.
Launch = tuple[list[str], dict[str, str]]


def worker_name(name: str | None, *, gpu: int | None, supervised: bool) -> str:
    """``name``, made distinct per GPU under one supervisor; default ``gpu<N>@%h`` or ``cpu@%h``."""
    if supervised and name:
        return f"{name}-gpu{gpu}"
    return name or (f"gpu{gpu}@%h" if gpu is not None else "cpu@%h")


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


#: Videos in flight per decoder with the threads pool: while one waits for its last batch, the
#: others keep the decoder busy and the inference loop's batches full.
VIDEOS_PER_DECODER = 4


@dataclass(frozen=True)
class WorkerPlan:
    """How one worker process shares its cores: pool, videos in flight, decoders, their threads."""

    pool: Pool
    concurrency: int
    decoders: int
    decoder_threads: int
    torch_threads: int

    def describe(self) -> str:
        per_process = "per process" if self.pool == "prefork" else "sharing one inference loop"
        return (
            f"{self.pool} pool, {self.concurrency} video(s) in flight {per_process}, "
            f"{self.decoders} decoding at a time with {self.decoder_threads} FFmpeg thread(s) each, "
            f"torch threads {self.torch_threads or 'default'}"
        )


def plan_worker(
    settings: Settings, *, pool: str | None, concurrency: int | None, uses_gpu: bool, workers: int = 1
) -> WorkerPlan:
    """Defaults for what was not given, from the cores this worker gets (its share of ``workers``).

    A GPU worker runs the ``threads`` pool: one process, one model, one inference loop fed by one
    decoder per core and :data:`VIDEOS_PER_DECODER` videos in flight per decoder. A CPU worker
    runs ``prefork`` with one video: there the backbone needs the cores, not the decoders.
    ``VFX_DECODERS`` and ``VFX_DECODER_THREADS`` win over the computed values.
    """
    cores = max(1, len(os.sched_getaffinity(0)) // max(1, workers))
    chosen: Pool = (pool or ("threads" if uses_gpu else "prefork"))  # type: ignore[assignment]
    if chosen == "threads":
        decoders = settings.decoders or (min(cores, concurrency) if concurrency else cores)
        concurrency = concurrency or VIDEOS_PER_DECODER * decoders
        decoders = min(decoders, concurrency)
        processes = 1
    else:
        concurrency = concurrency or 1
        decoders, processes = 1, concurrency
    decoder_threads = settings.decoder_threads or max(1, cores // (decoders * processes))
    torch_threads = torch_threads_per_process(settings, pool=chosen, concurrency=concurrency)
    return WorkerPlan(chosen, concurrency, decoders, decoder_threads, torch_threads)


def worker_launch(
    settings: Settings,
    *,
    name: str,
    gpu: int | None,
    pool: str | None = None,
    concurrency: int | None = None,
    workers: int = 1,
    loglevel: str = "info",
    celery_args: tuple[str, ...] = (),
) -> tuple[WorkerPlan, Launch]:
    """The plan, command line and environment of one worker named ``name``, pinned to ``gpu``.

    ``workers`` is how many workers share this machine's cores (one per GPU under a supervisor).
    """
    uses_gpu = gpu is not None or settings.device.startswith("cuda")
    plan = plan_worker(settings, pool=pool, concurrency=concurrency, uses_gpu=uses_gpu, workers=workers)
    planned = settings.with_overrides(
        torch_threads=plan.torch_threads, decoders=plan.decoders, decoder_threads=plan.decoder_threads
    )
    command = celery_worker_command(
        name=name, concurrency=plan.concurrency, loglevel=loglevel, pool=plan.pool, celery_args=celery_args
    )
    return plan, (command, worker_environment(planned, gpu=gpu))


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
    """The environment of one worker: this process's, its settings as ``VFX_*``, its GPU pinning."""
    environ = dict(os.environ)
    environ.update(settings.to_environ())
    if gpu is not None:
        environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    elif settings.device == "cpu":
        environ["CUDA_VISIBLE_DEVICES"] = ""
    return environ


def supervise(commands: list[Launch], *, restart_delay_seconds: float = RESTART_DELAY_SECONDS) -> int:
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
