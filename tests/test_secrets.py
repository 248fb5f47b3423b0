"""Secrets: a Redis password given in a URL is never printed by a command nor kept in a failure reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROCESS_TIMEOUT_SECONDS, REPO_DIR, run_cli
from vfx_tasks.errors import BrokerUnavailableError
from vfx_tasks.queue.worker.task import failure_reason
from vfx_tasks.redaction import redact, url_passwords
from vfx_tasks.settings import Settings

#: Nothing listens on port 1: every command fails to reach Redis and says so.
UNREACHABLE = "redis://:S3cret@127.0.0.1:1/0"


@pytest.mark.parametrize(
    "command",
    [
        ["vfx_tasks.cli.status", "--output_dir", "features"],
        ["vfx_tasks.cli.enqueue", "--input_dir", "videos", "--output_dir", "features"],
    ],
    ids=["vfx-status", "vfx-enqueue"],
)
def test_unreachable_redis_is_reported_without_its_password(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "videos").mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_DIR), "HOME": str(tmp_path)}
    module, *args = command
    # Given VFX_BROKER_URL with a password and nothing listening there, when the command starts,
    result = run_cli(module, *[str(tmp_path / a) if a in ("videos", "features") else a for a in args],
                     env={**env, "VFX_BROKER_URL": UNREACHABLE}, timeout=60)
    # then it stops as a usage error that names the address, with the password masked.
    assert result.returncode == 2, result.stderr
    assert "Cannot reach Redis at redis://:**@127.0.0.1:1/0" in result.stderr
    assert "S3cret" not in result.stdout + result.stderr


def test_a_worker_waiting_for_redis_says_so_without_its_password(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_DIR), "HOME": str(tmp_path)}
    # Given VFX_BROKER_URL with a password and nothing listening there, when vfx-worker starts,
    worker = subprocess.Popen(
        [sys.executable, "-m", "vfx_tasks.cli.worker", "--device", "cpu"],
        env={**env, "VFX_BROKER_URL": UNREACHABLE}, cwd=REPO_DIR,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert worker.stderr is not None
        first = worker.stderr.readline()
    finally:
        worker.kill()
        worker.wait(PROCESS_TIMEOUT_SECONDS)
    # then it says it waits for Redis, naming the address with the password masked.
    assert "Cannot reach Redis at redis://:**@127.0.0.1:1/0" in first and "Trying again in 1 s" in first
    assert "S3cret" not in first


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("at redis://:S3cret@host:6379/0 now", "at redis://:**@host:6379/0 now"),
        ("rediss://default:p@ss:w0rd@host/1", "rediss://default:**@host/1"),
        ("redis://S3cret@host/0", "redis://**@host/0"),  # a lone name may be a token
        ("unix:///run/redis.sock?db=0&password=S3cret", "unix:///run/redis.sock?db=0&password=**"),
        ("'http://u:S3cret@mirror/ckpt.pth'", "'http://u:**@mirror/ckpt.pth'"),
        # Nothing secret: left as it is.
        ("redis://host:6379/0 and mail@example.org", "redis://host:6379/0 and mail@example.org"),
    ],
)
def test_redact_masks_every_url_password(text: str, masked: str) -> None:
    assert redact(text) == masked


def test_known_passwords_are_masked_outside_urls_too() -> None:
    secrets = url_passwords("redis://:S3cr%40t@host/0", "redis://host/0")
    # A path that quoted the URL lost its "//": only the known password gives it away.
    assert redact("Video /data/redis:/:S3cr@t@host/0.mp4 does not exist", secrets=secrets) == (
        "Video /data/redis:/:**@host/0.mp4 does not exist"
    )


def test_failure_reasons_keep_no_password() -> None:
    error = BrokerUnavailableError(f"Lost the broker at {UNREACHABLE} after queueing 3 videos.")
    settings = Settings.from_env({})
    assert failure_reason(error, settings=settings) == {
        "code": "broker_unavailable",
        "message": "Lost the broker at redis://:**@127.0.0.1:1/0 after queueing 3 videos.",
    }
    unexpected = failure_reason(RuntimeError(f"unexpected: {UNREACHABLE}"), settings=settings)
    assert "S3cret" not in unexpected["message"]
