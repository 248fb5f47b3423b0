"""Talking to Redis: a checked connection, and what Redis's errors mean to the queue.

A lost connection is :class:`~vfx_tasks.errors.BrokerUnavailableError`; a Redis that answers but
refuses for now (out of memory, loading its data, read-only, unable to save)
:class:`~vfx_tasks.errors.BrokerBusyError`. Both are transient: the task is retried, ``--wait``
reconnects. URLs in messages never carry their password.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

from vfx_tasks.errors import BrokerBusyError, BrokerUnavailableError
from vfx_tasks.redaction import redact


def connect(url: str, *, timeout_seconds: float = 5.0) -> redis.Redis:
    """A Redis client for ``url`` whose connection has been checked.

    Raises:
        BrokerUnavailableError: nothing answers at ``url``.
    """
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_seconds, decode_responses=True)
    with redis_errors(url):
        client.ping()
    return client


#: Replies of a Redis that is up but cannot take the command now; each passes (memory freed,
#: disk space freed, replica promoted), so they are retried like a lost connection.
_BUSY_HINTS: tuple[tuple[type[redis.RedisError], str], ...] = (
    (redis.exceptions.OutOfMemoryError, "it is out of memory (maxmemory with noeviction): raise its "
     "maxmemory or free memory there"),
    (redis.exceptions.ReadOnlyError, "it is a read-only replica: point VFX_BROKER_URL at the primary"),
    (redis.exceptions.TryAgainError, "it asks to try again in a moment"),
)
#: Redis's own code for "cannot persist to disk, so writes are refused" (no redis-py class of its own).
_MISCONF = "MISCONF"


def _busy_hint(error: redis.ResponseError) -> str | None:
    if str(error).startswith(_MISCONF):
        return "it cannot write its data to disk: free disk space on the Redis host"
    return next((hint for kind, hint in _BUSY_HINTS if isinstance(error, kind)), None)


@contextmanager
def redis_errors(url: str) -> Iterator[None]:
    """Turn Redis failures that may pass into transient errors with a hint.

    A lost connection becomes :class:`BrokerUnavailableError`; a Redis that answers but cannot
    take the command now (still loading its data, out of memory, read-only, unable to save)
    :class:`BrokerBusyError`, its subclass.
    """
    try:
        yield
    except redis.exceptions.BusyLoadingError as e:
        raise BrokerBusyError(
            f"Redis at {redact(url)} is loading its data after a restart ({redact(str(e))}); "
            "retry in a few seconds."
        ) from e
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise BrokerUnavailableError(
            # Masked: the URL's password must not reach a terminal, a log or the ledger.
            f"Cannot reach Redis at {redact(url)} ({redact(str(e))}). Start redis-server there, point "
            "VFX_BROKER_URL / --broker-url at a running one, or use --local to start one for this run."
        ) from e
    except redis.ResponseError as e:
        hint = _busy_hint(e)
        if hint is None:
            raise
        raise BrokerBusyError(f"Redis at {redact(url)} refused a command ({redact(str(e))}): {hint}.") from e
