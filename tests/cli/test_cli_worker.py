"""``vfx-worker`` option handling (the worker processes themselves are exercised in test_worker.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tests.conftest import (
    REPO_DIR,
    RestartableRedis,
    WorkerProcess,
    alive_pids,
    descendant_pids,
    run_cli,
    wait_until,
)
from vfx_tasks.cli.worker import main, parse_gpus
from vfx_tasks.queue.processes.launch import (
    VIDEOS_PER_DECODER,
    celery_worker_command,
    plan_worker,
    torch_threads_per_process,
    worker_environment,
)
from vfx_tasks.settings import Settings


def test_parse_gpus() -> None:
    assert parse_gpus("0,1, 3") == [0, 1, 3]
    assert parse_gpus(None) == []
    for bad in ("a,b", "0,0", "-1"):
        with pytest.raises(click.BadParameter, match="e.g. 0,1,2,3"):
            parse_gpus(bad)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpu", "0", "--gpus", "1,2"], "either --gpu or --gpus"),
        (["--gpu", "0", "--device", "cpu"], "contradicts"),
        (["--gpus", "x"], "comma-separated"),
    ],
)
def test_contradictory_options_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and message in result.output


def test_gpu_pinning_and_pass_through_arguments() -> None:
    settings = Settings.from_env({}, device="cuda", broker_url="redis://h:1/0")
    environ = worker_environment(settings, gpu=2)
    assert environ["CUDA_VISIBLE_DEVICES"] == "2" and environ["VFX_BROKER_URL"] == "redis://h:1/0"
    assert worker_environment(settings.with_overrides(device="cpu"), gpu=None)["CUDA_VISIBLE_DEVICES"] == ""
    command = celery_worker_command(
        name="gpu2@%h", concurrency=1, loglevel="info", celery_args=("-O", "fair")
    )
    assert command[-2:] == ["-O", "fair"]
    assert command[command.index("--hostname") + 1] == "gpu2@%h"
    assert command[command.index("--pool") + 1] == "prefork"
    threads = celery_worker_command(name="gpu2@%h", concurrency=2, loglevel="info", pool="threads")
    assert threads[threads.index("--pool") + 1] == "threads"
    assert threads[threads.index("--concurrency") + 1] == "2"


@pytest.mark.parametrize(
    "spelling", sorted({k for k in click.types.BoolParamType.bool_states if k} | {"N", " Yes ", "OFF"})
)
def test_a_yes_or_no_variable_means_what_click_reads_it_as_and_what_the_flag_says(spelling: str) -> None:
    # Given a spelling click's boolean type accepts, in VFX_KEEP_DOWNLOADS or as the flag it means,
    expected = click.BOOL.convert(spelling, None, None)
    flag = "--keep-downloads" if expected else "--no-keep-downloads"
    dry = ["--device", "cpu", "--dry-run"]
    via_variable = CliRunner().invoke(main, dry, env={"VFX_KEEP_DOWNLOADS": spelling})
    via_flag = CliRunner().invoke(main, [*dry, flag], env={"VFX_KEEP_DOWNLOADS": None})
    # then both workers would start with the same setting.
    assert via_variable.exit_code == via_flag.exit_code == 0, via_variable.output + via_flag.output
    assert f"VFX_KEEP_DOWNLOADS={expected}" in via_variable.output
    assert f"VFX_KEEP_DOWNLOADS={expected}" in via_flag.output


def test_a_malformed_variable_is_a_usage_error_naming_it() -> None:
    result = CliRunner().invoke(main, ["--dry-run"], env={"VFX_KEEP_DOWNLOADS": "maybe", "VFX_DEVICE": None})
    assert result.exit_code == 2 and "VFX_KEEP_DOWNLOADS" in result.output
    result = CliRunner().invoke(main, ["--dry-run"], env={"VFX_DEVICE": "tpu"})
    assert result.exit_code == 2 and "VFX_DEVICE" in result.output


def test_dry_run_shows_the_command_and_settings_without_the_password() -> None:
    env = {"VFX_BROKER_URL": "redis://:S3cret@h:1/0", "VFX_DEVICE": None}
    result = CliRunner().invoke(main, ["--device", "cpu", "--dry-run", "--name", "w@h"], env=env)
    assert result.exit_code == 0, result.output
    assert "w@h: prefork pool, 1 video(s) in flight" in result.output
    assert "-m celery -A vfx_tasks worker --hostname w@h" in result.output
    assert "VFX_BROKER_URL=redis://:**@h:1/0" in result.output and "S3cret" not in result.output


def test_missing_gpu_is_refused_before_starting() -> None:
    import torch

    result = CliRunner().invoke(main, ["--gpu", str(torch.cuda.device_count())])
    assert result.exit_code == 2 and "not found" in result.output and "--device cpu" in result.output


def test_supervisor_restarts_crashed_workers_and_forwards_sigterm(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    script = textwrap.dedent(
        f"""
        import sys
        from vfx_tasks.queue.processes.launch import supervise
        sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
        crasher = [sys.executable, "-c", "open({str(starts)!r}, 'a').write('x'); raise SystemExit(3)"]
        sys.exit(supervise([(sleeper, {{}}), (crasher, {{}})], restart_delay_seconds=0.2))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}
    supervisor = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        # Given a supervised worker that keeps crashing, it is restarted each time,
        wait_until(
            lambda: starts.exists() and len(starts.read_text()) >= 2, "the crashed worker to be restarted", 60
        )
        children = descendant_pids(supervisor.pid)
        # and on SIGTERM every worker is stopped and the supervisor exits.
        supervisor.send_signal(signal.SIGTERM)
        # (1 if the crashing worker was last seen crashed, 0 if SIGTERM caught it running again)
        assert supervisor.wait(30) in (0, 1)
        time.sleep(0.5)
        assert alive_pids(children) == set()
    finally:
        supervisor.kill()


def test_prefork_processes_share_the_cores() -> None:
    settings = Settings.from_env({}, device="cpu")
    cores = len(os.sched_getaffinity(0))
    # One process keeps torch's default; N prefork processes get cores / N threads each,
    assert torch_threads_per_process(settings, pool="prefork", concurrency=1) == 0
    assert torch_threads_per_process(settings, pool="prefork", concurrency=2) == max(1, cores // 2)
    assert torch_threads_per_process(settings, pool="prefork", concurrency=4 * cores) == 1
    # the threads pool is one process, and an explicit VFX_TORCH_THREADS wins.
    assert torch_threads_per_process(settings, pool="threads", concurrency=2) == 0
    explicit = settings.with_overrides(torch_threads=3)
    assert torch_threads_per_process(explicit, pool="prefork", concurrency=2) == 3


def test_the_worker_plan_shares_the_cores_between_decoders_and_videos() -> None:
    settings = Settings.from_env({}, device="cuda")
    cores = len(os.sched_getaffinity(0))
    # A GPU worker: threads, one model and loop, a decoder per core with one FFmpeg thread each,
    gpu = plan_worker(settings, pool=None, concurrency=None, uses_gpu=True)
    assert (gpu.pool, gpu.decoders, gpu.decoder_threads) == ("threads", cores, 1)
    assert gpu.concurrency == VIDEOS_PER_DECODER * cores
    assert f"{gpu.concurrency} video(s) in flight sharing one inference loop" in gpu.describe()
    # two GPU workers on one box each get half the cores,
    shared = plan_worker(settings, pool=None, concurrency=None, uses_gpu=True, workers=2)
    assert shared.decoders == max(1, cores // 2)
    # fewer videos than cores: no more decoders than videos, each with more FFmpeg threads,
    few = plan_worker(settings, pool="threads", concurrency=1, uses_gpu=True)
    assert (few.concurrency, few.decoders, few.decoder_threads) == (1, 1, cores)
    # VFX_DECODERS and VFX_DECODER_THREADS win,
    chosen = settings.with_overrides(decoders=3, decoder_threads=2)
    explicit = plan_worker(chosen, pool=None, concurrency=None, uses_gpu=True)
    assert (explicit.concurrency, explicit.decoders, explicit.decoder_threads) == (12, 3, 2)
    # and a CPU worker keeps prefork with one video, as before.
    cpu = plan_worker(settings, pool=None, concurrency=None, uses_gpu=False)
    assert (cpu.pool, cpu.concurrency, cpu.decoders, cpu.decoder_threads) == ("prefork", 1, 1, cores)


def test_a_worker_started_before_redis_waits_for_it_with_backoff(
    tmp_path: Path, queue_env: dict[str, str]
) -> None:
    # Given a Redis that is not running yet (a reboot, services started in any order),
    server = RestartableRedis(tmp_path / "redis")
    # when a worker starts,
    worker = WorkerProcess({**queue_env, "VFX_BROKER_URL": server.url}, tmp_path / "worker.log", "early@%h")
    try:
        # then it says it waits for Redis and tries again, 1 s later, then 2 s...,
        wait_until(lambda: "Trying again in 2 s" in worker.log(), lambda: f"a second try:\n{worker.log()}")
        assert f"Cannot reach Redis at {server.url}" in worker.log() and worker.process.poll() is None
        # and once Redis is up, it starts and takes tasks.
        server.start()
        wait_until(lambda: "early@" in worker.log() and " ready." in worker.log(), worker.log)
        assert worker.process.poll() is None
    finally:
        worker.stop()
        server.stop(signal.SIGKILL)


def test_a_refused_password_stops_the_worker_as_a_usage_error(
    redis_url: str, queue_env: dict[str, str]
) -> None:
    wrong = redis_url.replace("redis://:", "redis://:wrong", 1)
    result = run_cli(
        "vfx_tasks.cli.worker", "--device", "cpu", env={**queue_env, "VFX_BROKER_URL": wrong}, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "refused the password" in result.stderr and "wrong" not in result.stderr
