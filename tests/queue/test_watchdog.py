"""The watchdog: a task past the hard limit is recorded and its process ended; others are left alone."""

from __future__ import annotations

import threading
import time

from vfx_tasks.queue.worker.watchdog import EXIT_STATUS, Watchdog, Watched


def test_a_task_past_the_limit_is_recorded_then_the_process_ends() -> None:
    recorded: list[list[Watched]] = []
    exits: list[int] = []
    ended = threading.Event()

    def exit(status: int) -> None:
        exits.append(status)
        ended.set()

    watchdog = Watchdog(0.3, on_expired=recorded.append, exit=exit, grace_seconds=0.1, check_seconds=0.05)
    with watchdog.watch("quick", ("run", "quick")):
        time.sleep(0.05)
    with watchdog.watch("stuck", ("run", "stuck")):
        assert ended.wait(10)
    assert exits == [EXIT_STATUS]
    assert [(watched.task_id, watched.ledger_key) for watched in recorded[0]] == [("stuck", ("run", "stuck"))]


def test_no_limit_watches_nothing() -> None:
    watchdog = Watchdog(0, on_expired=lambda expired: None, exit=lambda status: None)
    with watchdog.watch("task", ("run", "v")):
        assert watchdog.expired(now=time.monotonic() + 10**6) == []
    assert watchdog._thread is None


def test_tasks_are_watched_per_thread_and_forgotten_when_they_end() -> None:
    watchdog = Watchdog(5, on_expired=lambda expired: None, exit=lambda status: None, grace_seconds=1)
    inside = threading.Event()
    leave = threading.Event()

    def other() -> None:
        with watchdog.watch("other", ("run", "b")):
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(10)
    with watchdog.watch("mine", ("run", "a")):
        later = time.monotonic() + 6.5
        assert sorted(watched.task_id for watched in watchdog.expired(now=later)) == ["mine", "other"]
        assert watchdog.expired(now=time.monotonic()) == []
    leave.set()
    thread.join()
    assert watchdog.expired(now=time.monotonic() + 100) == []
