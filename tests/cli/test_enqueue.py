"""``vfx-enqueue`` against a real Redis, without workers: options, resumption, dedupe, speed, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from click.testing import CliRunner

from tests.conftest import run_cli, run_spec
from tests.helpers import enqueue_in_process, write_fake_videos
from vfx_tasks.cli.enqueue import main
from vfx_tasks.models import get_model_spec
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.processes.redis_server import free_port
from vfx_tasks.storage import output_path, write_features_atomic

I3D_DIM = get_model_spec("i3d").feature_dim
COMMON = ["--model", "i3d", "--crop_type", "center", "--num_clips_per_video", "1"]


@pytest.fixture
def fake_videos(tmp_path: Path) -> Path:
    """Five empty files with video names (enough to plan and queue; no worker runs here)."""
    root = tmp_path / "in"
    write_fake_videos(root, ["v0.mp4", "v1.avi", "sub/v2.mp4", "sub/deeper/v3.mkv", "v4.MOV"])
    return root


def queued_messages(redis_url: str) -> list[dict]:
    client = redis.Redis.from_url(redis_url)
    return [json.loads(raw) for raw in client.lrange("vfx", 0, -1)]


def test_queues_every_video_once_with_deterministic_ids(
    redis_url: str, fake_videos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    # Given a folder of five videos, when it is enqueued twice,
    first = enqueue_in_process(redis_url, "--input_dir", str(fake_videos), "--output_dir", str(out), *COMMON)
    second = enqueue_in_process(redis_url, "--input-dir", str(fake_videos), "--output-dir", str(out), *COMMON)
    # then the second producer queues nothing: every video is already queued.
    assert first.exit_code == 0 and "Queued 5 of 5" in first.output
    assert (
        second.exit_code == 0
        and "Queued 0 of 5" in second.output
        and "5 were already queued" in second.output
    )
    messages = queued_messages(redis_url)
    assert len(messages) == 5
    run = run_spec(out)
    by_id = {m["headers"]["id"]: m for m in messages}
    assert set(by_id) == {run.task_id(r) for r in ["v0", "v1", "sub/v2", "sub/deeper/v3", "v4"]}
    assert {m["headers"]["task"] for m in messages} == {"vfx.extract_video"}
    assert all(m["content-type"] == "application/json" for m in messages)


def test_resume_skips_done_videos_and_requeues_deleted_outputs(
    redis_url: str, fake_videos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run = run_spec(out)
    ids = ["sub/deeper/v3", "sub/v2", "v0", "v1", "v4"]
    # Given a run where every video is done (outputs written, ledger updated),
    ledger = Ledger.from_url(redis_url)
    ledger.register_run(run)
    for relative_id in ids:
        write_features_atomic(output_path(out, relative_id), np.zeros((1, 1, I3D_DIM), np.float32))
        ledger.mark_done(run.run_id, relative_id, {"shape": [1, 1, I3D_DIM]})
    args = ["--input_dir", str(fake_videos), "--output_dir", str(out), *COMMON, "--dry-run"]
    nothing = enqueue_in_process(redis_url, *args)
    assert nothing.exit_code == 0 and nothing.stdout == "" and "Would queue 0 of 5" in nothing.output

    # when one output is deleted and another is invalid, only those two are queued again;
    output_path(out, "v1").unlink()
    output_path(out, "sub/v2").write_bytes(b"\x93NUMPY garbage")
    assert sorted(enqueue_in_process(redis_url, *args).stdout.split()) == ["sub/v2", "v1"]

    # a video listed in --check_progress is skipped even without its output,
    progress = tmp_path / "progress.txt"
    progress.write_text("./v1\n")
    with_progress = enqueue_in_process(redis_url, *args, "--check_progress", str(progress))
    assert with_progress.stdout.split() == ["sub/v2"]

    # --force redoes all, --force_stop_after_n_videos caps what is queued,
    assert len(enqueue_in_process(redis_url, *args, "--force").stdout.split()) == 5
    capped = enqueue_in_process(redis_url, *args[:-1], "--force_stop_after_n_videos", "1")
    assert "Queued 1 of 5" in capped.output
    assert [m["headers"]["id"] for m in queued_messages(redis_url)] == [run.task_id("v1")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Give the videos with --input_dir"),
        (["--input_dir", "x", "--hf_dataset", "jherng/xd-violence"], "mutually exclusive"),
        (["--hf_dataset", "../xd-violence"], "Give it as owner/name"),
        (["--input_dir", "IN", "--split", "test"], "--split only apply to --hf_dataset"),
        (["--input_dir", "IN", "--num_clips_per_video", "0"], "use -1 (no limit / all) or a number >= 1"),
        (["--input_dir", "IN", "--batch-size", "-5"], "use -1"),
        (["--input_dir", "IN", "--model", "resnet"], "Supported values are"),
        (["--input_dir", "IN", "--crop_type", "3-crop"], "'center', '5-crop', '10-crop'"),
        (["--input_dir", "missing-folder"], "does not exist"),
    ],
)
def test_usage_errors_exit_2_with_a_hint(
    redis_url: str, fake_videos: Path, args: list[str], message: str
) -> None:
    args = [str(fake_videos) if a == "IN" else a for a in args]
    result = enqueue_in_process(redis_url, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_options_read_their_environment_variables(redis_url: str, fake_videos: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["--dry-run"],
        env={"VFX_BROKER_URL": redis_url, "VFX_INPUT_DIR": str(fake_videos), "VFX_NUM_CLIPS_PER_VIDEO": "0"},
    )
    assert result.exit_code == 2 and "num_clips_per_video" in result.output


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("vfx_tasks.cli.enqueue", ["--input_dir", "IN"]),
        ("vfx_tasks.cli.status", ["--output_dir", "OUT"]),
        # vfx-worker waits for Redis instead: tests/cli/test_cli_worker.py
    ],
)
def test_unreachable_redis_is_one_clear_line(
    queue_env: dict[str, str], fake_videos: Path, tmp_path: Path, module: str, args: list[str]
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    args = [{"IN": str(fake_videos), "OUT": str(tmp_path)}.get(a, a) for a in args]
    result = run_cli(module, *args, env={**queue_env, "VFX_BROKER_URL": url}, timeout=60)
    assert result.returncode == 2  # a usage error: the address given does not answer
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: Cannot reach Redis at {url}")


def test_wait_timeout_ends_the_wait_with_exit_code_4(
    redis_url: str, fake_videos: Path, tmp_path: Path
) -> None:
    # Given no worker at all, --wait would wait forever; --wait-timeout stops it.
    args = ["--input_dir", str(fake_videos), "--output_dir", str(tmp_path / "out"), *COMMON]
    result = enqueue_in_process(redis_url, *args, "--wait", "--wait-timeout", "0.5", "--poll_seconds", "0.1")
    assert result.exit_code == 4
    assert "0/5 done" in result.output and "Stopped waiting after 0.5 s" in result.output


def test_enqueueing_many_videos_takes_seconds(redis_url: str, tmp_path: Path) -> None:
    root = tmp_path / "many"
    write_fake_videos(root, (f"d{folder}/v{index}.mp4" for folder in range(20) for index in range(250)))
    args = ["--input_dir", str(root), "--output_dir", str(tmp_path / "out"), *COMMON]
    started = time.perf_counter()
    result = enqueue_in_process(redis_url, *args)
    seconds = time.perf_counter() - started
    assert "Queued 5000 of 5000" in result.output
    assert redis.Redis.from_url(redis_url).llen("vfx") == 5000
    assert seconds < 20, f"enqueueing 5,000 videos took {seconds:.1f} s"
