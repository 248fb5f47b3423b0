"""Waiting for a set of videos to finish, with a tqdm progress bar, by polling the ledger.

Redis may go away while we wait (a restart, a failover): the wait says so on one line, polls again
with backoff, says when it is back, and goes on counting. The workers ride out the same outage.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from tqdm import tqdm

from vfx_tasks.errors import BrokerUnavailableError
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.redaction import redact

#: How many videos' states are fetched per Redis round trip while polling.
_POLL_CHUNK = 5000
#: Off a terminal (a log file, CI), a progress line at most this often, and once at the end.
_LOG_EVERY_SECONDS = 10
#: While Redis is away: the first wait before polling again, doubled after each failure up to the cap.
_RECONNECT_FIRST_SECONDS = 0.5
_RECONNECT_MAX_SECONDS = 10.0
#: tqdm counts finished videos (done or failed); the fields after the bar are ours (see _VideoBar).
_BAR_FORMAT = (
    "[{bar:30}] {done}/{total_fmt} done, {failed} failed | {clips_per_second:.2f} clips/s | ETA {remaining}"
)


@dataclass
class WaitOutcome:
    """How the watched videos ended."""

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


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _stats(outcome: WaitOutcome, elapsed_seconds: float) -> dict[str, Any]:
    rate = outcome.clips / elapsed_seconds if elapsed_seconds > 0 else 0.0
    return {"done": len(outcome.done), "failed": len(outcome.failed), "clips_per_second": rate}


def progress_line(outcome: WaitOutcome, elapsed_seconds: float) -> str:
    """``[###.....] 12/100 done, 1 failed | 3.20 clips/s | ETA 05:10``: one line, for a log."""
    return tqdm.format_meter(
        outcome.finished,
        outcome.total,
        elapsed_seconds,
        ascii=".#",
        bar_format=_BAR_FORMAT,
        **_stats(outcome, elapsed_seconds),
    )


class _VideoBar(tqdm):  # type: ignore[type-arg]
    """A bar over finished videos that also shows the done / failed split and the clip rate.

    Extra fields for ``bar_format`` come through ``format_dict``, as tqdm's documentation shows.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.stats: dict[str, Any] = {"done": 0, "failed": 0, "clips_per_second": 0.0}
        super().__init__(*args, **kwargs)

    @property
    def format_dict(self) -> dict[str, Any]:
        return {**super().format_dict, **self.stats}


class _Progress:
    """A tqdm bar on a terminal; elsewhere a sparse log of whole lines (no carriage returns)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.stream = stream
        # smoothing=0: the ETA extrapolates the average rate, as videos take very different times.
        self.bar = _VideoBar(
            total=total, file=stream, bar_format=_BAR_FORMAT, smoothing=0, disable=not stream.isatty()
        )
        self.started = time.monotonic()
        self.last_line, self.last_print = "", float("-inf")

    def show(self, outcome: WaitOutcome, *, final: bool) -> None:
        elapsed = time.monotonic() - self.started
        if not self.bar.disable:
            self.bar.stats = _stats(outcome, elapsed)
            self.bar.update(outcome.finished - self.bar.n)
            self.bar.refresh()  # the stats may change while no video finishes
            return
        line = progress_line(outcome, elapsed)
        if line != self.last_line and (final or time.monotonic() - self.last_print > _LOG_EVERY_SECONDS):
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_line, self.last_print = line, time.monotonic()

    def say(self, line: str) -> None:
        """One line of its own, above the bar on a terminal."""
        if self.bar.disable:
            self.stream.write(line + "\n")
            self.stream.flush()
        else:
            self.bar.write(line, file=self.stream)

    def close(self) -> None:
        self.bar.close()


class _Outage:
    """Says once that Redis is lost and once that it is back; paces the polls in between."""

    def __init__(self, url: str, progress: _Progress) -> None:
        self.url = redact(url)
        self.progress = progress
        self.lost_at: float | None = None
        self.delay_seconds = _RECONNECT_FIRST_SECONDS

    def lost(self, error: BrokerUnavailableError) -> float:
        """Seconds to wait before the next poll."""
        if self.lost_at is None:
            self.lost_at = time.monotonic()
            self.progress.say(f"Lost Redis at {self.url} ({error.__cause__ or error}); reconnecting...")
            return self.delay_seconds
        self.delay_seconds = min(self.delay_seconds * 2, _RECONNECT_MAX_SECONDS)
        return self.delay_seconds

    def polled(self) -> None:
        """A poll went through: say so if Redis was away."""
        if self.lost_at is not None:
            self.progress.say(
                f"Reconnected to Redis at {self.url} after {time.monotonic() - self.lost_at:.0f} s."
            )
            self.lost_at, self.delay_seconds = None, _RECONNECT_FIRST_SECONDS


def _collect(
    ledger: Ledger, run_id: str, remaining: list[str], outcome: WaitOutcome
) -> tuple[list[str], list[str]]:
    """Move the videos of ``remaining`` that ended into ``outcome``; return (newly done, still open)."""
    newly_done: list[str] = []
    still: list[str] = []
    for start in range(0, len(remaining), _POLL_CHUNK):
        chunk = remaining[start : start + _POLL_CHUNK]
        done = ledger.summaries(run_id, "done", chunk)
        failed = ledger.summaries(run_id, "failed", chunk)
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
    poll_seconds: float = 1.0,
    on_done: Callable[[list[str]], None] | None = None,
    check: Callable[[], None] | None = None,
    stream: TextIO | None = None,
) -> WaitOutcome:
    """Poll the ledger until every video is done or failed; draw progress on ``stream`` (stderr).

    ``on_done`` gets each batch of newly finished videos (to append them to a progress file);
    ``check`` runs every poll and may raise to stop waiting (e.g. when local workers died).
    """
    remaining = list(dict.fromkeys(relative_ids))
    outcome = WaitOutcome(total=len(remaining))
    progress = _Progress(outcome.total, stream if stream is not None else sys.stderr)
    outage = _Outage(ledger.url, progress)
    try:
        while True:
            try:
                newly_done, remaining = _collect(ledger, run_id, remaining, outcome)
            except BrokerUnavailableError as e:  # what was collected before stays in outcome
                pause = outage.lost(e)
            else:
                outage.polled()
                if newly_done and on_done is not None:
                    on_done(newly_done)
                progress.show(outcome, final=not remaining)
                if not remaining:
                    break
                pause = poll_seconds
            if check is not None:
                check()
            time.sleep(pause)
    finally:
        progress.close()
    outcome.seconds = time.monotonic() - progress.started
    return outcome
