"""``vfx-enqueue --local``: a private Redis and local workers for one run, torn down afterwards.

Every process started here lives in its own session (process group), so a Ctrl-C in the terminal
reaches only ``vfx-enqueue``, which then stops the workers (warm shutdown, then a kill after a
grace period), removes any partial output a killed writer left, and stops Redis last.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from vfx_tasks.errors import LocalWorkersDiedError
from vfx_tasks.queue.processes.launch import Launch, worker_launch
from vfx_tasks.queue.processes.redis_server import RedisServer
from vfx_tasks.settings import Settings
from vfx_tasks.storage import is_url, remove_temp_files

logger = logging.getLogger(__name__)


def visible_gpus() -> list[int]:
    """Indices of the GPUs this process can use (none without CUDA)."""
    import torch  # querying CUDA here is safe: workers are started as new programs, not forked

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


class LocalCluster:
    """Embedded ``redis-server`` plus one ``vfx-worker`` per visible GPU (or one on the CPU).

    ``concurrency`` and ``pool`` are each worker's ``--concurrency`` and ``--pool`` (``None``:
    the worker's defaults, see :func:`~.launch.plan_worker`). The workers
    read only under ``input_dir`` (none: only Hub videos) and write only under ``output_dir``;
    either may be an object-storage URL, whose client options and credentials reach the workers
    through their environment (``VFX_STORAGE_OPTIONS``, ``AWS_*``...), never their command line.
    They read a run's own model config and checkpoint only under ``model_roots``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        output_dir: str | os.PathLike[str],
        input_dir: str | os.PathLike[str] | None = None,
        model_roots: Sequence[Path] = (),
        gpus: list[int] | None = None,
        concurrency: int | None = None,
        pool: str | None = None,
        stop_grace_seconds: float = 10.0,
    ) -> None:
        self.settings = settings
        self.concurrency = concurrency
        self.pool = pool
        self.output_dir = _location(output_dir)
        self.input_dir = _location(input_dir) if input_dir is not None else None
        self.model_roots = tuple(model_roots)
        self.gpus = gpus
        self._worker_count = 1
        self.stop_grace_seconds = stop_grace_seconds
        self.redis = RedisServer()
        self.workers: list[subprocess.Popen[bytes]] = []
        #: Each started worker's plan, as ``vfx-worker`` prints it.
        self.plans: list[str] = []
        self.log_dir = Path(tempfile.mkdtemp(prefix="vfx-local-logs-"))

    @property
    def broker_url(self) -> str:
        return self.redis.url

    def start(self) -> LocalCluster:
        """Start Redis, then the workers."""
        self.start_redis()
        self.start_workers()
        return self

    def start_redis(self) -> None:
        """Start only Redis: enough to plan a run, and cheap when it turns out to have nothing to do."""
        self.redis.start()

    def start_workers(self) -> None:
        """Start one worker per GPU (or one on the CPU); on failure stop everything started."""
        try:
            gpus = (
                self.gpus
                if self.gpus is not None
                else ([] if self.settings.device == "cpu" else visible_gpus())
            )
            self._worker_count = max(1, len(gpus))
            for index, gpu in enumerate(gpus or [None]):
                self.workers.append(self._start_worker(index, gpu))
        except BaseException:
            self.stop()
            raise

    def worker_launch(self, index: int, gpu: int | None) -> Launch:
        """Local worker ``index``'s command line and environment (pinned to ``gpu``, or on the CPU).

        Redis's URL, password included, travels in the environment (only the same user and root
        can read it), never on the command line, which any user can read.
        """
        url = self.redis.url
        settings = self.worker_settings().with_overrides(
            broker_url=url, result_backend=url, device="cuda" if gpu is not None else self._cpu_device()
        )
        plan, launch = worker_launch(
            settings,
            name=f"local{index}@%h",
            gpu=gpu,
            pool=self.pool,
            concurrency=self.concurrency,
            workers=self._worker_count,
            celery_args=("--without-gossip", "--without-mingle"),
        )
        self.plans.append(plan.describe())
        return launch

    def _cpu_device(self) -> str:
        # Without a GPU visible, "auto" means the CPU; say so, so that the worker plans for it.
        return "cpu" if self.settings.device == "auto" else self.settings.device

    def _start_worker(self, index: int, gpu: int | None) -> subprocess.Popen[bytes]:
        command, environ = self.worker_launch(index, gpu)
        log_path = self.log_dir / f"worker-{index}.log"
        with open(log_path, "wb") as log:
            log.write(f"local{index}: {self.plans[-1]}\n".encode())
            log.flush()
            process = subprocess.Popen(
                command, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        logger.info("Started local worker %d (pid %d), log %s", index, process.pid, log_path)
        return process

    def worker_settings(self) -> Settings:
        """The settings the workers get: this run's input and output folders as their only roots."""
        # The folders of this run and nothing else, whatever VFX_*_ROOTS say: on a private Redis
        # that any local user can reach, these are the only paths a task has a reason to name.
        # Workers on several GPUs of this machine share its cores between their decoders.
        cores = len(os.sched_getaffinity(0))
        shared = max(1, cores // self._worker_count) if self._worker_count > 1 else None
        return self.settings.with_overrides(
            input_roots=[_root(self.input_dir)] if self.input_dir is not None else [],
            output_roots=[_root(self.output_dir)],
            model_roots=list(self.model_roots),
            decoders=self.settings.decoders or shared,
        )

    def check(self) -> None:
        """Raise :class:`LocalWorkersDiedError` when no worker is left running."""
        if self.workers and all(worker.poll() is not None for worker in self.workers):
            tail = (self.log_dir / "worker-0.log").read_text(errors="replace")[-2000:]
            raise LocalWorkersDiedError(
                f"All local workers exited (logs in {self.log_dir}). Last lines of worker 0:\n{tail}"
            )

    def stop(self) -> None:
        """Stop workers (SIGTERM, then SIGKILL of their whole process group), clean up, stop Redis."""
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)  # warm shutdown: the main process stops its pool
        for worker in self.workers:
            try:
                worker.wait(self.stop_grace_seconds)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "Worker %d did not stop in %.0f s; killing it", worker.pid, self.stop_grace_seconds
                )
            # Also reaps pool children that outlived their parent.
            _signal_group(worker, signal.SIGKILL)
            worker.wait()
        if isinstance(self.output_dir, Path) and self.output_dir.is_dir():
            remove_temp_files(self.output_dir)  # an object store keeps no partial objects
        self.redis.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _location(location: str | os.PathLike[str]) -> Path | str:
    """A local folder as a ``Path``, an object-storage URL as its text."""
    return str(location) if is_url(str(location)) else Path(location)


def _root(location: Path | str) -> Path | str:
    return location.resolve() if isinstance(location, Path) else location


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
