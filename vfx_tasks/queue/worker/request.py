"""A ``vfx.extract_video`` message's headers are untrusted too: the worker's own limits apply.

Celery reads much of how it runs a task from the message: ``retries`` (how many retries are
left), ``eta`` (when to run it; the worker holds such a message beyond its prefetch until then),
``expires``, ``timelimit`` (overriding the worker's time limits), ``shadow`` (the name shown),
``kwargsrepr`` (the arguments Flower shows) and, in the body, callbacks, errbacks, chains and
chords to run after it. Anyone who can send a task chooses all of them. :class:`ExtractVideoRequest`
(the task's ``Request`` class, Celery's hook for a task's requests) puts the worker's values in their
place when a message is received, before Celery schedules or runs it:

* ``retries`` is clamped to ``0..max_retries`` (a negative count retried for ever);
* an ``eta`` later than ``retry_backoff_max_seconds`` from now (the longest delay the task's own
  retries ask for) is brought forward to that; ``expires`` is dropped;
* ``timelimit`` is dropped, so the worker's time limits hold;
* ``shadow`` and the repr of the arguments are the task's real name and arguments, so Flower and
  the logs show what the worker runs;
* the body's callbacks, errbacks, chain and chord are dropped: the task runs alone.

What a header said is logged when it was changed. Which tasks a worker accepts at all is decided by
its registry (:mod:`.guards`): only ``vfx.extract_video``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from celery.utils.saferepr import saferepr
from celery.worker.request import Request

logger = logging.getLogger(__name__)

#: Longest argument repr shown in events (Flower) and logs; the task's own arguments are far shorter.
MAX_REPR_CHARS = 1024
#: Slack on the latest ``eta`` for clocks that differ between the machine that retried and this one.
ETA_SLACK_SECONDS = 60


class ExtractVideoRequest(Request):
    """A received ``vfx.extract_video`` request, its headers replaced by the worker's limits."""

    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(message, *args, **kwargs)
        settings = self._app.settings
        changed: list[str] = []
        retries = self._clamped_retries(settings.max_retries)
        if retries != self._request_dict.get("retries", 0):
            changed.append(f"retries {self._request_dict.get('retries')!r:.40} -> {retries}")
        self._request_dict["retries"] = retries
        latest = datetime.now(timezone.utc) + timedelta(seconds=settings.retry_backoff_max_seconds)
        if self._eta is not None and _later(self._eta, latest + timedelta(seconds=ETA_SLACK_SECONDS)):
            changed.append(f"eta {self._eta.isoformat()} -> {latest.isoformat()}")
            self._eta = latest
            self._request_dict["eta"] = latest.isoformat()
        if self._expires is not None or self._request_dict.get("expires") is not None:
            changed.append("expires dropped")
            self._expires = self._request_dict["expires"] = None
        if self._request_dict.get("timelimit") not in (None, (None, None), [None, None]):
            changed.append(f"timelimit {self._request_dict['timelimit']!r:.60} dropped")
        self.time_limits = (None, None)  # the worker's configured limits apply
        self._request_dict["timelimit"] = (None, None)
        self.name = self._type  # never a "shadow" name
        self._run_alone()
        self._argsrepr = saferepr(self._args, maxlen=MAX_REPR_CHARS)
        self._kwargsrepr = saferepr(self._kwargs, maxlen=MAX_REPR_CHARS)
        self._request_dict.update(argsrepr=self._argsrepr, kwargsrepr=self._kwargsrepr, shadow=None)
        if changed:
            logger.warning("Task %s: the message's headers asked for more than this worker allows: %s",
                           self.id, "; ".join(changed))

    def _clamped_retries(self, max_retries: int) -> int:
        value = self._request_dict.get("retries", 0)
        if isinstance(value, bool) or not isinstance(value, int):
            return max_retries  # unreadable: as if no retry were left
        return min(max(value, 0), max_retries)

    def _run_alone(self) -> None:
        """Run the task with its arguments only: no callbacks, errbacks, chain, chord or group."""
        for header in ("group", "group_index", "chord", "callbacks", "errbacks", "chain", "links"):
            self._request_dict.pop(header, None)
        # The pool decodes the body again for the embedded signatures: give it the decoded body
        # without them (Celery's trace takes a tuple when there is no content type).
        self._body = (self._args, self._kwargs, {})
        self._content_type = self._content_encoding = None
        self._decoded = True


def _later(eta: datetime, latest: datetime) -> bool:
    """Whether ``eta`` is after ``latest`` (a naive ``eta`` is taken as UTC)."""
    if eta.tzinfo is None:
        eta = eta.replace(tzinfo=timezone.utc)
    return eta > latest
