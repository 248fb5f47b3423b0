"""Chaos: pool children, whole workers and Redis itself killed and restarted at random during one run.

The product's contract under all of it: ``vfx-enqueue --wait`` ends with exit code 0 without a
rerun, every video has exactly one complete output equal to the pipeline's, no temporary file is
left, the ledger shows nothing queued or running, no message is left unacknowledged, and every
delivery a Redis outage cut off is settled (put back and run, or acknowledged) within
:data:`RECONCILE_BUDGET_SECONDS` of Redis coming back.

When the kills and restarts land is drawn from a seed, printed with every failure. To run the
test again with a seed, or several times with different ones::

    VFX_CHAOS_SEEDS=1234 pytest tests/queue/test_chaos.py
    VFX_CHAOS_SEEDS=1,2,3 pytest tests/queue/test_chaos.py -s     # -s prints each run's figures
    VFX_CHAOS_RUNS=10 pytest tests/queue/test_chaos.py -s         # ten fresh seeds

Without either variable the suite runs it once with a fresh seed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import redis
from kombu.exceptions import OperationalError

from tests.conftest import (
    PROCESS_TIMEOUT_SECONDS,
    RestartableRedis,
    WorkerProcess,
    run_cli,
    run_spec,
    wait_until,
    write_test_video,
)
from tests.helpers import ENQUEUE, RUN_SPEC_OPTIONS, start_enqueue_wait
from vfx_tasks.errors import VfxError
from vfx_tasks.extract.pipeline import FeatureExtractor
from vfx_tasks.queue.app import create_app
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.recovery.holders import Holders
from vfx_tasks.queue.recovery.stranded import StrandedVideo, stranded_videos
from vfx_tasks.settings import Settings
from vfx_tasks.storage import find_temp_files

pytestmark = [pytest.mark.slow, pytest.mark.restartable_redis]

#: Distinct contents (two or three clips each, as their frame counts say), each copied into several
#: videos: 30 videos, and few reference extractions to compare the outputs with. The run must
#: outlast the schedule (its last blow comes at most 45 s after the first video starts) on a quiet
#: two-core machine: 75 clips take about 70 s there.
FRAMES = (100, 160, 100, 160, 100, 160)
COPIES = 5
#: How long after Redis answers again every delivery cut off by its outage must be settled.
RECONCILE_BUDGET_SECONDS = 60.0
WORKERS = ("a", "b")


def chaos_seeds() -> list[int]:
    """Seeds from ``VFX_CHAOS_SEEDS`` (comma-separated), else ``VFX_CHAOS_RUNS`` fresh ones (default 1)."""
    if seeds := os.environ.get("VFX_CHAOS_SEEDS"):
        return [int(seed) for seed in seeds.split(",") if seed.strip()]
    runs = int(os.environ.get("VFX_CHAOS_RUNS", "1"))
    return [random.SystemRandom().randrange(1_000_000) for _ in range(runs)]


@dataclass(frozen=True)
class Event:
    """One blow: ``at`` seconds after the first video started."""

    at: float
    kind: str  # "child" (a pool child SIGKILLed), "whole" (the worker SIGKILLed and restarted), "redis"
    target: str = ""  # the worker's letter
    sig: signal.Signals = signal.SIGKILL  # how Redis is stopped
    down_seconds: float = 0.0

    def __str__(self) -> str:
        if self.kind == "redis":
            return f"{self.at:5.1f} s: Redis {self.sig.name}, down {self.down_seconds:.1f} s"
        what = "pool child of" if self.kind == "child" else "whole worker"
        return f"{self.at:5.1f} s: SIGKILL {what} {self.target}"


def schedule(seed: int) -> list[Event]:
    """Two Redis restarts about 30 s apart (one graceful, one a crash) and three or four worker
    kills (a pool child at least once, a whole worker at least once) at times drawn from ``seed``."""
    rng = random.Random(seed)
    first = rng.uniform(4, 10)
    second = first + rng.uniform(27, 32)
    events = [
        Event(at, "redis", sig=sig, down_seconds=rng.uniform(1, 3))
        for at, sig in zip((first, second), rng.sample([signal.SIGTERM, signal.SIGKILL], 2), strict=True)
    ]
    kinds = ["child", "whole"] + [rng.choice(["child", "whole"]) for _ in range(rng.randint(1, 2))]
    events += [Event(rng.uniform(1, second + 3), kind, target=rng.choice(WORKERS)) for kind in kinds]
    return sorted(events, key=lambda event: event.at)


def write_videos(folder: Path) -> dict[str, Path]:
    """``relative_id -> the video whose content it has``: ``len(FRAMES) x COPIES`` short videos."""
    originals = [
        write_test_video(folder / "originals" / f"c{i}.mp4", width=96 + 8 * i, height=64, num_frames=frames)
        for i, frames in enumerate(FRAMES)
    ]
    videos = {}
    for copy in range(COPIES):
        (folder / "videos" / f"copy{copy}").mkdir(parents=True)
        for i, original in enumerate(originals):
            shutil.copy(original, folder / "videos" / f"copy{copy}" / f"c{i}.mp4")
            videos[f"copy{copy}/c{i}"] = original
    return videos


@pytest.fixture
def workers(queue_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, list[WorkerProcess]]]:
    """Workers ``a@<host>`` and ``b@<host>``, each a list of its processes (restarts append); all stopped."""
    started = {name: [WorkerProcess(queue_env, tmp_path / f"{name}-0.log", f"{name}@%h")] for name in WORKERS}
    yield started
    for processes in started.values():
        for process in processes:
            process.stop()


@dataclass
class Outage:
    """One Redis restart: when it went down and came back (``time.time()``), and when every
    delivery made before it had been settled."""

    event: Event
    down_at: float
    back_at: float
    settled_at: float | None = None

    @property
    def late(self) -> bool:
        """Not settled, and past the budget."""
        return self.settled_at is None and time.time() - self.back_at > RECONCILE_BUDGET_SECONDS

    @property
    def delay(self) -> float | None:
        return None if self.settled_at is None else self.settled_at - self.back_at

    def check(self, client: redis.Redis) -> None:
        """Settled once kombu holds no delivery made before the outage (each delivery's time is
        its score in ``unacked_index``; a delivery put back and taken again gets a new one)."""
        if self.settled_at is not None:
            return
        try:
            oldest = client.zrange("unacked_index", 0, 0, withscores=True)
        except redis.ConnectionError:
            return  # Redis is down again
        if not oldest or oldest[0][1] > self.down_at:
            self.settled_at = time.time()


@dataclass
class StrandedWatch:
    """How long each video stays stranded as ``vfx-status`` sees it: queued or running, and held by
    no live worker (see :mod:`vfx_tasks.queue.recovery.stranded`)."""

    find: Callable[[], list[StrandedVideo]]
    since: dict[str, float] = field(default_factory=dict)
    longest: float = 0.0
    worst: str = "none"

    def check(self) -> None:
        try:
            stranded = {video.relative_id: video for video in self.find()}
        except (OperationalError, redis.RedisError, VfxError):
            return  # Redis is down: the clocks of those seen go on
        now = time.monotonic()
        self.since = {relative_id: self.since.get(relative_id, now) for relative_id in stranded}
        for relative_id, since in self.since.items():
            if now - since > self.longest:
                self.longest, self.worst = now - since, f"{relative_id}: {stranded[relative_id].detail}"


@dataclass
class Chaos:
    """Carries out a schedule against the run's workers and Redis, and measures each outage and
    how long videos stay stranded."""

    events: list[Event]
    restartable_redis: RestartableRedis
    workers: dict[str, list[WorkerProcess]]
    start_worker: Callable[[str], WorkerProcess]
    stranded: StrandedWatch
    log: list[str] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    kills: int = 0

    def run(self, waiting: subprocess.Popen[str], started: float) -> None:
        """Strike each event at its time while the run goes on, until the run ends and every outage
        is settled, or something stays stranded or unsettled past the budget."""
        client = redis.Redis.from_url(self.restartable_redis.url, socket_timeout=5)
        pending, next_look = list(self.events), 0.0
        while pending or waiting.poll() is None or any(o.settled_at is None for o in self.outages):
            for outage in self.outages:
                outage.check(client)
            if time.monotonic() >= next_look:
                self.stranded.check()
                next_look = time.monotonic() + 2
            if any(o.late for o in self.outages) or self.stranded.longest > RECONCILE_BUDGET_SECONDS:
                return
            self.supervise()
            if pending and time.monotonic() - started >= pending[0].at:
                event = pending.pop(0)
                if waiting.poll() is not None:
                    self.log.append(f"{event}: not struck, the run had ended")
                    continue
                self.strike(event)
            time.sleep(0.2)

    def supervise(self) -> None:
        """Start again, under its name, a worker that exited, as compose's restart policy does:
        ``vfx-worker`` exits 2 when Redis is down as it starts, and Celery's worker exits when its
        first pool process dies before the pool is up (a pool child killed a moment after a restart)."""
        for name, processes in self.workers.items():
            code = processes[-1].process.poll()
            if code is not None:
                last = processes[-1].log().strip().splitlines()[-1:]
                self.log.append(f"worker {name} exited with {code} ({''.join(last)[-200:]}): started again")
                time.sleep(1)
                processes.append(self.start_worker(name))

    def strike(self, event: Event) -> None:
        self.log.append(str(event))
        if event.kind == "redis":
            down_at = time.time()
            self.restartable_redis.restart(event.sig, down_seconds=event.down_seconds)
            self.outages.append(Outage(event, down_at, time.time()))
            return
        if event.kind == "child":
            # A worker restarted a moment ago may not have its pool child yet.
            def child() -> bool:
                self.supervise()
                return bool(self.workers[event.target][-1].pool_children())

            wait_until(child, f"a pool child of worker {event.target}")
            os.kill(self.workers[event.target][-1].pool_children()[0], signal.SIGKILL)
        else:
            worker = self.workers[event.target][-1]
            os.killpg(worker.pid, signal.SIGKILL)
            worker.process.wait(PROCESS_TIMEOUT_SECONDS)
            self.workers[event.target].append(self.start_worker(event.target))
        self.kills += 1


@pytest.mark.parametrize("seed", chaos_seeds(), ids=lambda seed: f"seed={seed}")
def test_random_kills_and_redis_restarts_lose_nothing(
    seed: int,
    tmp_path: Path,
    queue_env: dict[str, str],
    restartable_redis: RestartableRedis,
    workers: dict[str, list[WorkerProcess]],
    pretrained_dir: Path,
) -> None:
    began = time.monotonic()
    events = schedule(seed)
    videos = write_videos(tmp_path)
    out = tmp_path / "features"
    ledger, run_id = Ledger.from_url(restartable_redis.url), run_spec(out, num_clips_per_video=-1).run_id
    client = redis.Redis.from_url(restartable_redis.url)

    def start_worker(name: str) -> WorkerProcess:
        return WorkerProcess(queue_env, tmp_path / f"{name}-{len(workers[name])}.log", f"{name}@%h")

    settings = Settings.from_env(queue_env)
    app, holders = create_app(settings, producer_only=True), Holders.from_url(settings.broker_url)
    watch = StrandedWatch(lambda: stranded_videos(app, ledger, holders, run_id, queue=settings.queue_name))
    chaos = Chaos(events, restartable_redis, workers, start_worker, watch)

    def context() -> str:
        logs = "\n".join(
            f"--- {process.log_path.name}\n{process.log()[-6000:]}"
            for processes in workers.values()
            for process in processes
        )
        timeline = "\n  ".join(chaos.log)
        delays = ", ".join(f"{o.delay:.1f} s" if o.delay is not None else "never" for o in chaos.outages)
        outages = ", ".join(f"down {o.down_at:.1f} back {o.back_at:.1f}" for o in chaos.outages)
        return (
            f"seed {seed} (VFX_CHAOS_SEEDS={seed} runs it again); struck:\n  {timeline}\n"
            f"outages {outages}, settled {delays} after; longest stranded {watch.longest:.0f} s "
            f"({watch.worst})\n{held_now()}\n{logs}"
        )

    def held_now() -> str:
        try:
            delivered = client.zrange("unacked_index", 0, -1, withscores=True)
            running, pending = ledger.entries(run_id, "running"), ledger.entries(run_id, "pending")
        except redis.ConnectionError as e:
            return f"Redis unreachable: {e}"
        return f"now {time.time():.1f}; unacked {delivered}; ledger running {running}, pending {pending}"

    # Given two workers (prefork, one pool child each), 30 videos and `vfx-enqueue --wait`,
    args = ["--input_dir", str(tmp_path / "videos"), "--output_dir", str(out), "--num_clips_per_video", "-1"]
    waiting = start_enqueue_wait(queue_env, *args, wait_timeout=2 * PROCESS_TIMEOUT_SECONDS)
    host = socket.gethostname()
    wait_until(lambda: bool(ledger.entries(run_id, "running")), "a worker to run a video")
    # when pool children and whole workers are SIGKILLed (the whole ones restarted under their
    # names) and Redis is stopped and started again twice, at random times,
    try:
        chaos.run(waiting, time.monotonic())
    except AssertionError as e:
        waiting.kill()
        raise AssertionError(f"{e}: {context()}") from e
    # then the run went through the whole schedule,
    assert chaos.kills >= 3 and len(chaos.outages) == 2, context()
    # every delivery an outage cut off was settled within a minute of Redis coming back, and no
    # video stayed stranded (queued or running, held by no live worker) longer than that,
    if not all(o.delay is not None and o.delay <= RECONCILE_BUDGET_SECONDS for o in chaos.outages):
        waiting.kill()
        raise AssertionError(f"a delivery cut off by an outage was not settled in time: {context()}")
    if watch.longest > RECONCILE_BUDGET_SECONDS:
        waiting.kill()
        raise AssertionError(f"stranded for {watch.longest:.0f} s: {watch.worst}; {context()}")
    _, stderr = waiting.communicate(timeout=3 * PROCESS_TIMEOUT_SECONDS)
    # the wait ended with every video done, without a rerun,
    assert waiting.returncode == 0, stderr + context()
    assert f"{len(videos)} done, 0 failed of {len(videos)}" in stderr, stderr + context()
    # the ledger shows nothing queued or running, and kombu holds no message unacknowledged,
    assert ledger.entries(run_id, "running") == {} and ledger.entries(run_id, "pending") == {}, context()
    wait_until(lambda: client.hlen("unacked") == 0, "the last acknowledgements", RECONCILE_BUDGET_SECONDS)
    # each video has exactly one output, equal to the pipeline's, and no temporary file is left;
    assert sorted(p.relative_to(out).with_suffix("").as_posix() for p in out.rglob("*.npy")) == sorted(videos)
    assert find_temp_files(out) == [], context()
    extractor = FeatureExtractor("i3d", pretrained_dir=pretrained_dir, device="cpu")
    # A CPU worker runs forwards of at most two clips (extract.batching.loop_shape): so do these.
    references = {
        original: extractor.extract(original, crop_type="center", batch_size=2).features
        for original in set(videos.values())
    }
    for relative_id, original in videos.items():
        np.testing.assert_array_equal(np.load(out / f"{relative_id}.npy"), references[original], relative_id)
    # vfx-status shows everything done,
    status = run_cli("vfx_tasks.cli.status", "--output_dir", str(out), "--json", env=queue_env)
    assert status.returncode == 0, status.stderr
    totals = json.loads(status.stdout)["totals"]
    expected = {"queued": 0, "running": 0, "done": len(videos), "failed": 0, "stranded": 0}
    assert totals == expected, status.stdout
    # and running the same command again queues nothing.
    rerun = run_cli(ENQUEUE, *RUN_SPEC_OPTIONS, *args, env=queue_env)
    assert rerun.returncode == 0 and f"Queued 0 of {len(videos)}" in rerun.stderr, rerun.stderr
    delays = ", ".join(f"{o.delay:.1f}" for o in chaos.outages if o.delay is not None)
    print(
        f"chaos seed={seed}: {time.monotonic() - began:.0f} s in all, settled {delays} s after Redis came "
        f"back, longest stranded {watch.longest:.0f} s, {sum(map(len, workers.values())) - 2} worker "
        f"start(s) ({host}: load {os.getloadavg()[0]:.1f})"
    )
