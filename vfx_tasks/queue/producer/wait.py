"""Waiting for a set of videos to finish, by polling the ledger.

Redis may go away while we wait (a restart, a failover): the wait says so once, polls again with
backoff, says when it is back, and goes on counting. The workers ride out the same outage. How
progress is shown is the caller's: it passes a :class:`ProgressView` (``vfx-enqueue`` draws a bar).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from vfx_tasks.errors import BrokerUnavailableError
from vfx_tasks.queue.ledger import Ledger, State
from vfx_tasks.redaction import redact

#: How many videos' states are fetched per Redis round trip while polling.
_POLL_CHUNK = 5000
#: While Redis is away: the first wait before polling again, doubled after each failure up to the cap.
_RECONNECT_FIRST_SECONDS = 0.5
_RECONNECT_MAX_SECONDS = 10.0


@dataclass
class WaitOutcome:
    """How the watched videos ended (so far, while waiting)."""

    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)
    total: int = 0
    seconds: float = 0.0

    @property
    def clips(self) -> int:
        return sum(int(summary.get("shape", [0])[0]) for summary in self.done.values())

    @property
    def finished(self) -> int:
        return len(self.done) + len(self.failed)


class ProgressView(Protocol):
    """What the wait reports to: the outcome after each poll, and lines about the connection."""

    def show(self, outcome: WaitOutcome, *, elapsed_seconds: float, final: bool) -> None: ...

    def say(self, line: str) -> None: ...


class _Outage:
    """Says once that Redis is lost and once that it is back; paces the polls in between."""

    def __init__(self, url: str, view: ProgressView) -> None:
        self.url = redact(url)
        self.view = view
        self.lost_at: float | None = None
        self.delay_seconds = _RECONNECT_FIRST_SECONDS

    def lost(self, error: BrokerUnavailableError) -> float:
        """Seconds to wait before the next poll."""
        if self.lost_at is None:
            self.lost_at = time.monotonic()
            self.view.say(f"Lost Redis at {self.url} ({error.__cause__ or error}); reconnecting...")
            return self.delay_seconds
        self.delay_seconds = min(self.delay_seconds * 2, _RECONNECT_MAX_SECONDS)
        return self.delay_seconds

    def polled(self) -> None:
        """A poll went through: say so if Redis was away."""
        if self.lost_at is not None:
            seconds = time.monotonic() - self.lost_at
            self.view.say(f"Reconnected to Redis at {self.url} after {seconds:.0f} s.")
            self.lost_at, self.delay_seconds = None, _RECONNECT_FIRST_SECONDS


def _collect(
    ledger: Ledger, run_id: str, remaining: list[str], outcome: WaitOutcome
) -> tuple[list[str], list[str]]:
    """Move the videos of ``remaining`` that ended into ``outcome``; return (newly done, still open)."""
    newly_done: list[str] = []
    still: list[str] = []
    for start in range(0, len(remaining), _POLL_CHUNK):
        chunk = remaining[start : start + _POLL_CHUNK]
        done = ledger.summaries(run_id, State.DONE, chunk)
        failed = ledger.summaries(run_id, State.FAILED, chunk)
        for relative_id in chunk:
            if relative_id in done:
                outcome.done[relative_id] = done[relative_id]
                newly_done.append(relative_id)
            elif relative_id in failed:
                outcome.failed[relative_id] = failed[relative_id]
            else:
                still.append(relative_id)
    return newly_done, still


def wait_for_videos(
    ledger: Ledger,
    run_id: str,
    relative_ids: Iterable[str],
    *,
    view: ProgressView,
    poll_seconds: float = 1.0,
    on_done: Callable[[list[str]], None] | None = None,
    check: Callable[[], None] | None = None,
) -> WaitOutcome:
    """Poll the ledger until every video is done or failed, reporting to ``view``.

    ``on_done`` gets each batch of newly finished videos (to append them to a progress file);
    ``check`` runs every poll and may raise to stop waiting (e.g. when local workers died).
    """
    remaining = list(dict.fromkeys(relative_ids))
    outcome = WaitOutcome(total=len(remaining))
    outage = _Outage(ledger.url, view)
    started = time.monotonic()
    while True:
        try:
            newly_done, remaining = _collect(ledger, run_id, remaining, outcome)
        except BrokerUnavailableError as e:  # what was collected before stays in outcome
            pause = outage.lost(e)
        else:
            outage.polled()
            if newly_done and on_done is not None:
                on_done(newly_done)
            view.show(outcome, elapsed_seconds=time.monotonic() - started, final=not remaining)
            if not remaining:
                break
            pause = poll_seconds
        if check is not None:
            check()
        time.sleep(pause)
    outcome.seconds = time.monotonic() - started
    return outcome
