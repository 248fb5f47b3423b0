"""Talking to Redis: a checked connection, and what Redis's errors mean to the queue.

A lost connection is :class:`~vfx_tasks.errors.BrokerUnavailableError`; a Redis that answers but
refuses for now (out of memory, loading its data, read-only, unable to save)
:class:`~vfx_tasks.errors.BrokerBusyError`. Both are transient: the task is retried, ``--wait``
reconnects. URLs in messages never carry their password.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from vfx_tasks.errors import BrokerBusyError, BrokerUnavailableError, ConfigurationError
from vfx_tasks.redaction import redact

#: Waits between attempts to reach a Redis that is down: 1, 2, 4... s, at most this.
WAIT_MAX_SECONDS = 30.0


def connect(url: str, *, timeout_seconds: float = 5.0) -> redis.Redis:
    """A Redis client for ``url`` whose connection has been checked.

    Raises:
        BrokerUnavailableError: nothing answers at ``url``.
    """
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_seconds, decode_responses=True)
    with redis_errors(url):
        client.ping()
    return client


def wait_for_redis(
    url: str,
    *,
    say: Callable[[str], None],
    first_delay_seconds: float = 1.0,
    max_delay_seconds: float = WAIT_MAX_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once Redis at ``url`` answers, trying again with backoff for as long as it takes.

    A worker started before its Redis (a reboot, a compose file brought up in any order, a Redis
    restarting) waits for it, as compose's restart policy or a supervisor would have restarted it;
    each failed attempt is said through ``say``.

    Raises:
        ConfigurationError: the URL is malformed or Redis refuses its password: waiting cannot help.
    """
    delay = first_delay_seconds
    while True:
        try:
            connect(url).close()
            return
        except ValueError as e:  # redis-py's word for a URL it cannot parse
            raise ConfigurationError(
                f"Invalid Redis URL {redact(url)} ({redact(str(e))}); check VFX_BROKER_URL / --broker-url."
            ) from e
        except BrokerUnavailableError as e:
            if isinstance(e.__cause__, redis.AuthenticationError):
                raise ConfigurationError(
                    f"Redis at {redact(url)} refused the password ({redact(str(e.__cause__))}); check "
                    "VFX_BROKER_URL / --broker-url."
                ) from e
            say(f"{e} Trying again in {delay:.0f} s (Ctrl-C to stop).")
        sleep(delay)
        delay = min(delay * 2, max_delay_seconds)


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
