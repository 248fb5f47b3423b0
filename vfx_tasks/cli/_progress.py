"""``vfx-enqueue --wait``'s progress: a tqdm bar on a terminal, a sparse log of whole lines elsewhere."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, TextIO

from tqdm import tqdm

from vfx_tasks.queue.producer.wait import WaitOutcome

#: Off a terminal (a log file, CI), a progress line at most this often, and once at the end.
_LOG_EVERY_SECONDS = 10
#: tqdm counts finished videos (done or failed); the fields after the bar are ours (see _VideoBar).
_BAR_FORMAT = (
    "[{bar:30}] {done}/{total_fmt} done, {failed} failed | {clips_per_second:.2f} clips/s | ETA {remaining}"
)


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


class ProgressBar:
    """A :class:`~vfx_tasks.queue.producer.wait.ProgressView` drawing on ``stream``; a context manager."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.stream = stream
        # smoothing=0: the ETA extrapolates the average rate, as videos take very different times.
        self.bar = _VideoBar(
            total=total, file=stream, bar_format=_BAR_FORMAT, smoothing=0, disable=not stream.isatty()
        )
        self.last_line, self.last_print = "", float("-inf")

    def show(self, outcome: WaitOutcome, *, elapsed_seconds: float, final: bool) -> None:
        if not self.bar.disable:
            self.bar.stats = _stats(outcome, elapsed_seconds)
            self.bar.update(outcome.finished - self.bar.n)
            self.bar.refresh()  # the stats may change while no video finishes
            return
        line = progress_line(outcome, elapsed_seconds)
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

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bar.close()
