"""``vfx-status`` reads the ledger of an output root: counts, failures with reasons, JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path

import redis
from click.testing import CliRunner

from tests.conftest import run_spec
from tests.queue.helpers import hold_unacknowledged
from vfx_tasks.cli.status import main
from vfx_tasks.models import DEFAULT_MODEL
from vfx_tasks.queue.app import EXTRACT_VIDEO_TASK, create_app
from vfx_tasks.queue.job import Job
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.recovery.holders import Holders
from vfx_tasks.queue.recovery.internals import unacked_deliveries
from vfx_tasks.settings import Settings


def test_counts_and_failures_of_an_output_root(redis_url: str, tmp_path: Path) -> None:
    # Given a run with one video of each state,
    run = run_spec(tmp_path, model=DEFAULT_MODEL)
    ledger = Ledger.from_url(redis_url)
    ledger.register_run(run)
    ledger.claim(run, ["queued", "running", "done", "failed"])
    ledger.mark_started(run.run_id, "running", "w1")
    ledger.mark_done(run.run_id, "done", {"shape": [1, 1, 2048]})
    ledger.mark_failed(run.run_id, "failed", {"code": "bad_video", "message": "cannot decode"})
    env = {"VFX_BROKER_URL": redis_url}
    # when vfx-status asks about it (by alias, as JSON and as text),
    as_json = CliRunner().invoke(main, ["--output_dir", str(tmp_path), "--model", "i3d", "--json"], env=env)
    as_text = CliRunner().invoke(main, ["--output-dir", str(tmp_path)], env=env)
    other = CliRunner().invoke(main, ["--output-dir", str(tmp_path), "--model", "swin-t"], env=env)
    # then each state is counted and the failure shows its reason.
    assert as_json.exit_code == 0
    status = json.loads(as_json.output)
    assert status["totals"] == {"queued": 1, "running": 1, "done": 1, "failed": 1, "stranded": 2}
    assert status["runs"][0]["failed"] == {"failed": {"code": "bad_video", "message": "cannot decode"}}
    assert "queued 1, running 1, done 1, failed 1" in as_text.output
    assert "FAILED failed: [bad_video] cannot decode" in as_text.output
    assert "No runs recorded" in other.output


def test_videos_no_live_worker_holds_are_shown_stranded(redis_url: str, tmp_path: Path) -> None:
    run = run_spec(tmp_path, model=DEFAULT_MODEL)
    ledger, holders = Ledger.from_url(redis_url), Holders.from_url(redis_url)
    ledger.register_run(run)
    videos = ["waiting", "unheld", "held", "missing", "on-gone", "on-live"]
    ledger.claim(run, videos)
    # Given queued videos: one whose message waits in the queue, one delivered a minute ago to a
    # worker that is gone, one delivered to a live worker, one whose message was lost; and videos
    # running on a worker that is gone and on a live one,
    app = create_app(Settings.from_env({}, broker_url=redis_url))
    held = [hold_unacknowledged(redis_url, run, name, queue="vfx") for name in ("unheld", "held")]
    job = Job.create(run, relative_id="waiting", video_path="/nowhere.mp4")
    app.send_task(EXTRACT_VIDEO_TASK, kwargs=job.to_message(), task_id=run.task_id("waiting"))
    tags = {d.task_id: d.delivery_tag for d in unacked_deliveries(app)}
    redis.Redis.from_url(redis_url).zadd("unacked_index", {tags[run.task_id("unheld")]: time.time() - 60})
    holders.write("live-1", "live@box", {tags[run.task_id("held")]: run.task_id("held")}, ttl_seconds=60)
    ledger.mark_started(run.run_id, "on-gone", "gone@box")
    ledger.mark_started(run.run_id, "on-live", "live@box")
    env = {"VFX_BROKER_URL": redis_url}
    # when vfx-status asks about the run,
    as_json = CliRunner().invoke(main, ["--output_dir", str(tmp_path), "--json"], env=env)
    as_text = CliRunner().invoke(main, ["--output_dir", str(tmp_path)], env=env)
    # then the three that no live worker will run are named, with what to do,
    assert as_json.exit_code == 0, as_json.output
    status = json.loads(as_json.output)
    assert status["totals"] == {"queued": 4, "running": 2, "done": 0, "failed": 0, "stranded": 3}
    stranded = {video["relative_id"]: video for video in status["runs"][0]["stranded"]}
    assert {name: (v["state"], v["reason"]) for name, v in stranded.items()} == {
        "unheld": ("pending", "unheld"),
        "missing": ("pending", "missing"),
        "on-gone": ("running", "gone"),
    }
    assert "run the same vfx-enqueue command again" in stranded["missing"]["detail"]
    assert "stranded 3: held by no live worker" in as_text.output
    assert "STRANDED unheld (pending): delivered 60 s ago and held by no live worker" in as_text.output
    assert "STRANDED on-gone (running): running on gone@box, which is gone" in as_text.output
    for connection in held:
        connection.release()


def test_refused_messages_are_counted_and_the_last_shown_with_their_reasons(
    redis_url: str, tmp_path: Path
) -> None:
    # Given workers that refused six messages (one naming a video of a run, one another task),
    ledger = Ledger.from_url(redis_url)
    for index in range(5):
        ledger.record_refusal({"task_id": f"t{index}", "run_id": "r", "relative_id": f"v{index}",
                               "code": "untrusted_message", "message": f"reason {index}", "at": 0})
    ledger.record_refusal({"task_id": "t5", "task": "celery.chord_unlock", "code": "unknown_task",
                           "message": "workers run vfx.extract_video only", "at": 0})
    env = {"VFX_BROKER_URL": redis_url}
    # when vfx-status is asked about any folder,
    as_text = CliRunner().invoke(main, ["--output-dir", str(tmp_path)], env=env)
    as_json = CliRunner().invoke(main, ["--output-dir", str(tmp_path), "--json"], env=env)
    # then it says how many were refused, and the last five, newest first, with their reasons.
    assert "Refused task messages on this Redis: 6 in all (filed under no run); the last 5:" in as_text.output
    assert "task t5: [unknown_task] workers run vfx.extract_video only" in as_text.output
    assert "task t4 claiming 'v4': [untrusted_message] reason 4" in as_text.output
    assert "task t0" not in as_text.output
    refused = json.loads(as_json.output)["refused"]
    assert refused["count"] == 6 and [entry["task_id"] for entry in refused["last"]][:2] == ["t5", "t4"]
