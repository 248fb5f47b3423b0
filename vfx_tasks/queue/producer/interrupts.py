"""Ctrl-C and SIGTERM held back while the producer sends a chunk, so a chunk is sent whole or not at all.

A ``KeyboardInterrupt`` raised in the middle of kombu's publish batch drops the buffered messages
of videos already claimed in the ledger. Within :func:`deferred_interrupts` the first SIGINT or
SIGTERM only sets a flag that the producer reads between chunks; the signal's previous handler is
put back at once, so a second one acts as usual (Ctrl-C raises, SIGTERM ends the process).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_interrupts() -> Iterator[Callable[[], bool]]:
    """Within the block, SIGINT / SIGTERM are recorded; yields a function saying whether one came.

    Signal handlers can only be set from the main thread; elsewhere nothing is deferred (and the
    function always answers ``False``).
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    # None: a handler not set from Python, which cannot be put back; the default is the closest.
    previous = {signum: signal.getsignal(signum) or signal.SIG_DFL for signum in _SIGNALS}

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        for restored, handler in previous.items():
            signal.signal(restored, handler)

    for signum in _SIGNALS:
        signal.signal(signum, record)
    try:
        yield lambda: bool(received)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
