"""Forged messages run on the worker's terms (issue 18 items 4, 6, 10): its retries, delays and time
limits, its one task, its ledger; and what it ran is what it shows.

Messages are sent with ``app.send_task``, as anyone with the Redis password or a Flower login could,
to real workers whose roots are ``in/`` and ``out/``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.states import READY_STATES

from tests.conftest import WorkerProcess, run_spec, wait_until, write_test_video
from vfx_tasks.queue.app import EXTRACT_VIDEO_TASK, create_app
from vfx_tasks.queue.job import Job, Run
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.settings import Settings

pytestmark = pytest.mark.slow


def message(run: Run, relative_id: str, video: Path, **changes: Any) -> dict[str, Any]:
    """A well-formed message of ``run`` for ``video``, with ``changes`` to its arguments."""
    return {**Job.create(run, relative_id=relative_id, video_path=str(video)).to_message(), **changes}


class ReceivedEvents:
    """The ``task-received`` events the workers send (what Flower shows as a task's arguments)."""

    def __init__(self, app: Celery) -> None:
        self.app, self.kwargs = app, {}
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._capture, daemon=True)
        self._thread.start()
        wait_until(lambda: self._receiver is not None, "the event receiver to start", timeout=10)
        time.sleep(1.0)  # its queue is declared as it starts consuming

    def _capture(self) -> None:
        with self.app.connection_for_read() as connection:
            handlers = {"task-received": lambda e: self.kwargs.__setitem__(e["uuid"], e["kwargs"])}
            self._receiver = self.app.events.Receiver(connection, handlers=handlers)
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def stop(self) -> None:
        self._receiver.should_stop = True


def test_forged_headers_get_the_workers_limits_and_only_its_task_runs(
    tmp_path: Path, redis_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    video = write_test_video(inputs / "v.mp4", width=96, height=64, num_frames=16)
    out.mkdir()
    (out / "blocked").write_text("a file where a folder should be")  # every write there fails (transient)
    run = run_spec(out)
    ledger = Ledger.from_url(redis_url)
    ledger.register_run(run)
    # Given a worker allowing one retry after at most 2 s, with its Redis' event stream watched,
    worker = start_worker(
        VFX_INPUT_ROOTS=str(inputs), VFX_OUTPUT_ROOTS=str(out), VFX_MAX_RETRIES="1",
        VFX_RETRY_BACKOFF_MAX_SECONDS="2",
    )  # fmt: skip
    app = create_app(Settings.from_env({}, broker_url=redis_url))
    events = ReceivedEvents(app)
    try:
        # when a message that fails transiently says a million retries are left,
        endless = app.send_task(EXTRACT_VIDEO_TASK, kwargs=message(run, "blocked/v", video), retries=-1000000)
        # messages ask to run in 2035 (each held beyond the worker's prefetch until then),
        later = [
            app.send_task(EXTRACT_VIDEO_TASK, kwargs=message(run, f"later{i}", video, labels=[i]),
                          eta=datetime(2035, 1, 1, tzinfo=timezone.utc), expires=datetime(2036, 1, 1))
            for i in range(3)
        ]  # fmt: skip
        # a message names another of Celery's tasks, one that would retry itself without pause,
        unlock = app.send_task(
            "celery.chord_unlock", kwargs={"group_id": "g", "callback": {"task": "x"}, "interval": 0}
        )
        # and one shows Flower an innocent video while it runs another,
        shown = "{'video_path': '/in/innocent.mp4', 'relative_id': 'innocent'}"
        disguised = app.send_task(EXTRACT_VIDEO_TASK, kwargs=message(run, "real", video), kwargsrepr=shown)
        results = [endless, *later, disguised]
        ended = lambda: all(r.state in READY_STATES for r in results)  # noqa: E731
        wait_until(ended, lambda: f"every task to end:\n{worker.log()}")
        # then the failing one was retried once, as the worker allows, and then recorded as failed,
        assert endless.state == "FAILURE"
        assert "blocked/v: Cannot write features" in worker.log()
        assert "; retry 1 in" in worker.log() and "; retry 2 in" not in worker.log(), worker.log()
        assert ledger.entries(run.run_id, "failed")["blocked/v"]["code"] == "output_error"
        # the late ones ran within the worker's longest retry delay, not in 2035 (here: refused labels),
        assert [r.state for r in later] == ["FAILURE"] * 3
        assert "the message's headers asked for more than this worker allows: eta 2035-01-01" in worker.log()
        # the other task's message was dropped at once and recorded as refused,
        count, refusals = ledger.refusals()
        unknown = [r for r in refusals if r["task_id"] == unlock.id]
        assert unknown and unknown[0]["code"] == "unknown_task", refusals
        assert sum("chord_unlock" in line for line in worker.log().splitlines()) <= 20, worker.log()[-3000:]
        # and the disguised one was shown, logged and stored as what it ran.
        assert disguised.state == "SUCCESS"
        assert disguised.result["video_path"] == str(video) and disguised.result["relative_id"] == "real"
        assert f"Task {disguised.id} runs 'real': video {str(video)!r}" in worker.log()
        wait_until(lambda: disguised.id in events.kwargs, "the task-received event of the disguised task")
        assert "innocent" not in events.kwargs[disguised.id] and str(video) in events.kwargs[disguised.id]
    finally:
        events.stop()


def test_a_message_cannot_set_the_time_limits(
    tmp_path: Path, redis_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    video = write_test_video(inputs / "v.mp4", width=96, height=64, num_frames=128)
    out.mkdir()
    run = run_spec(out, num_clips_per_video=2)
    # Given a worker with its own time limits (the defaults: hours),
    worker = start_worker(VFX_INPUT_ROOTS=str(inputs), VFX_OUTPUT_ROOTS=str(out))
    app = create_app(Settings.from_env({}, broker_url=redis_url))
    # when a message asks for limits of its own (shorter here, so that the test shows the header
    # ignored without waiting for a hung video; a longer one would keep a hung decoder for days),
    result = app.send_task(
        EXTRACT_VIDEO_TASK, kwargs=message(run, "v", video), time_limit=2, soft_time_limit=1
    )
    wait_until(lambda: result.state in READY_STATES, "the task to end")
    # then the worker's limits hold: the video, which takes longer than a second here, is done.
    assert result.state == "SUCCESS", result.result
    assert "timelimit [2, 1] dropped" in worker.log()


def test_a_refused_message_never_rewrites_another_runs_ledger(
    tmp_path: Path, redis_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    inputs, out, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    video = write_test_video(inputs / "v.mp4", width=96, height=64, num_frames=16)
    out.mkdir()
    victim, other = run_spec(out), run_spec(out, crop_type="5-crop")
    ledger = Ledger.from_url(redis_url)
    ledger.register_run(victim)
    start_worker(VFX_INPUT_ROOTS=str(inputs), VFX_OUTPUT_ROOTS=str(out), VFX_MAX_RETRIES="0")
    app = create_app(Settings.from_env({}, broker_url=redis_url))
    # Given a victim run with one video done and one queued,
    done = app.send_task(EXTRACT_VIDEO_TASK, kwargs=message(victim, "done", video))
    wait_until(lambda: done.state in READY_STATES, "the victim's video to be done")
    assert set(ledger.entries(victim.run_id, "done")) == {"done"}
    assert ledger.claim(victim, ["queued"]) == [True]
    # when refused messages name its run and videos: its run id with other settings and folder,
    forged = [message(run_spec(elsewhere), name, video, run_id=victim.run_id) for name in ("done", "queued")]
    # its own folder and settings, but with labels a worker refuses,
    forged.append(message(victim, "done", video, labels={"x": "a" * (2 << 20)}))
    # and a message of another run of the folder, for a video of the same name, refused the same way,
    forged.append(message(other, "queued", video, video_path="/etc/passwd"))
    sent = [app.send_task(EXTRACT_VIDEO_TASK, kwargs=kwargs) for kwargs in forged]
    wait_until(lambda: all(r.state in READY_STATES for r in sent), "the forged tasks to end")
    # then the victim's done video is still done and its queued one still queued,
    assert set(ledger.entries(victim.run_id, "done")) == {"done"}
    assert ledger.entries(victim.run_id, "failed") == {}
    assert set(ledger.entries(victim.run_id, "pending")) == {"queued"}
    # the refusal of the message that was its own run's is that run's failure only,
    assert set(ledger.entries(other.run_id, "failed")) == {"queued"}
    # and every message was refused and filed under vfx:refused, with the ids it claimed.
    count, refusals = ledger.refusals()
    by_task = {r["task_id"]: r for r in refusals}
    assert count == 4 and all(by_task[r.id]["code"] == "untrusted_message" for r in sent), refusals
    assert "the id of the run its output_dir and settings name" in by_task[sent[0].id]["message"]
    assert by_task[sent[0].id]["run_id"] == victim.run_id
