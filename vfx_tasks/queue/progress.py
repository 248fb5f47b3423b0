"""Waiting for a set of videos to finish, with a progress line, by polling the ledger."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from vfx_tasks.queue.ledger import Ledger

#: How many videos' states are fetched per Redis round trip while polling.
_POLL_CHUNK = 5000


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


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_line(outcome: WaitOutcome, elapsed_seconds: float, *, width: int = 30) -> str:
    """``[#####.....] 12/100 done, 1 failed | 3.2 clips/s | ETA 0:05:10``."""
    finished = len(outcome.done) + len(outcome.failed)
    filled = int(width * finished / outcome.total) if outcome.total else width
    rate = outcome.clips / elapsed_seconds if elapsed_seconds > 0 else 0.0
    if finished:
        eta = format_duration(elapsed_seconds / finished * (outcome.total - finished))
    else:
        eta = "?"
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {len(outcome.done)}/{outcome.total} done, "
        f"{len(outcome.failed)} failed | {rate:.2f} clips/s | ETA {eta}"
    )


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
    """Poll the ledger until every video is done or failed; draw progress on ``stream``.

    ``on_done`` gets each batch of newly finished videos (to append them to a progress file);
    ``check`` runs every poll and may raise to stop waiting (e.g. when local workers died).
    """
    stream = stream if stream is not None else sys.stderr
    interactive = stream.isatty()
    remaining = list(dict.fromkeys(relative_ids))
    outcome = WaitOutcome(total=len(remaining))
    started = time.monotonic()
    last_line, last_print = "", 0.0
    while True:
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
        remaining = still
        if newly_done and on_done is not None:
            on_done(newly_done)
        elapsed = time.monotonic() - started
        line = progress_line(outcome, elapsed)
        if interactive:
            stream.write("\r" + line)
            stream.flush()
        elif line != last_line and (not remaining or time.monotonic() - last_print > 10):
            stream.write(line + "\n")
            stream.flush()
            last_line, last_print = line, time.monotonic()
        if not remaining:
            break
        if check is not None:
            check()
        time.sleep(poll_seconds)
    if interactive:
        stream.write("\n")
    outcome.seconds = time.monotonic() - started
    return outcome
