"""Waiting for a set of videos to finish, with a tqdm progress bar, by polling the ledger."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from tqdm import tqdm

from vfx_tasks.queue.ledger import Ledger

#: How many videos' states are fetched per Redis round trip while polling.
_POLL_CHUNK = 5000
#: Off a terminal (a log file, CI), a progress line at most this often, and once at the end.
_LOG_EVERY_SECONDS = 10
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

    def close(self) -> None:
        self.bar.close()


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
    try:
        while True:
            newly_done, remaining = _collect(ledger, run_id, remaining, outcome)
            if newly_done and on_done is not None:
                on_done(newly_done)
            progress.show(outcome, final=not remaining)
            if not remaining:
                break
            if check is not None:
                check()
            time.sleep(poll_seconds)
    finally:
        progress.close()
    outcome.seconds = time.monotonic() - progress.started
    return outcome
