"""Waiting on a run: the ledger polled on a real Redis, progress drawn by tqdm or logged in lines."""

from __future__ import annotations

import io
import threading
from typing import Any, TextIO

from vfx_tasks.cli._progress import ProgressBar, format_duration
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.producer.wait import WaitOutcome, wait_for_videos


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _finish_later(ledger: Ledger) -> threading.Timer:
    def finish() -> None:
        ledger.mark_done("run1", "a", {"shape": [4, 1, 2048]})
        ledger.mark_failed("run1", "b", {"code": "bad_video", "message": "empty"})

    timer = threading.Timer(0.3, finish)
    timer.start()
    return timer


def wait_with_bar(ledger: Ledger, relative_ids: list[str], stream: TextIO, **options: Any) -> WaitOutcome:
    with ProgressBar(len(set(relative_ids)), stream) as bar:
        return wait_for_videos(ledger, "run1", relative_ids, view=bar, poll_seconds=0.05, **options)


def test_off_a_terminal_progress_is_a_sparse_log_of_whole_lines(redis_url: str) -> None:
    ledger, log, finished = Ledger.from_url(redis_url), io.StringIO(), []
    # Given two queued videos that end while we wait, when waiting with stderr not a terminal,
    timer = _finish_later(ledger)
    outcome = wait_with_bar(ledger, ["a", "b", "a"], log, on_done=finished.extend)
    timer.join()
    # then the outcome has both, the done one was reported once,
    assert (sorted(outcome.done), sorted(outcome.failed)) == (["a"], ["b"])
    assert (outcome.total, outcome.clips) == (2, 4)
    assert finished == ["a"]
    # and the log holds one line at the start and one at the end, without carriage returns.
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 2, log.getvalue()
    assert lines[0] == "[" + "." * 30 + "] 0/2 done, 0 failed | 0.00 clips/s | ETA ?"
    assert lines[1].startswith("[" + "#" * 30 + "] 1/2 done, 1 failed | ")
    assert lines[1].endswith(" clips/s | ETA 00:00")


def test_on_a_terminal_tqdm_redraws_one_line(redis_url: str) -> None:
    ledger, terminal = Ledger.from_url(redis_url), _Terminal()
    timer = _finish_later(ledger)
    wait_with_bar(ledger, ["a", "b"], terminal)
    timer.join()
    drawn = terminal.getvalue()
    assert drawn.count("\n") == 1 and drawn.endswith("\n") and drawn.count("\r") > 1
    assert "] 1/2 done, 1 failed | " in drawn.split("\r")[-1]


def test_durations_read_as_hours_minutes_seconds() -> None:
    assert format_duration(3725.9) == "1:02:05" and format_duration(-1) == "0:00:00"
