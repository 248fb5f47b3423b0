"""The kombu and Celery internals the queue leans on, in one place: the Redis transport's
``unacked`` hash, publish batches, and the worker's sets of requests in flight.

Written against kombu 5.7 (pyproject asks for ``kombu>=5.7``, the first with ``Producer.batch``)
and Celery 5.7. What it relies on, and ``tests/queue/test_kombu_internals.py`` pins so that an
upgrade that changes any of it fails there first:

* The Redis transport keeps every delivered, unacknowledged message in the hash named by
  ``Channel.unacked_key`` (``"unacked"`` unless the ``unacked_key`` transport option says
  otherwise): delivery tag -> JSON ``[message, exchange, routing_key]``, where ``message`` is the
  payload kombu put on the queue, its body base64-encoded (``properties.body_encoding``).
  Reading it is the only way to see which tasks a dead worker held; kombu has no public API for it.
* A message leaves that hash when it is acknowledged, rejected or restored: a delivery tag still
  there belongs to a message nobody has settled yet.
* ``QoS.restore_by_tag`` moves one such message back to the end of its queue that consumers pop
  next, and drops it from the hash and its index in the same transaction.
* A queue is the Redis list named after it (``"<queue>\x06\x16<priority>"`` for priorities 3, 6,
  9), producers ``LPUSH`` kombu's JSON message onto it, and a Celery task message carries its
  task id in ``headers["id"]``.
* ``Producer.batch`` (new in kombu 5.7, public) buffers publishes into Redis pipelines of
  ``max_size`` messages: flushed when the block ends, discarded when it raises.
* ``celery.worker.state.reserved_requests`` and ``active_requests`` hold the requests a worker
  process has received and not finished, each with its kombu ``message.delivery_tag``; Celery has
  no public way to list them from inside the worker.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu import Producer


@dataclass(frozen=True)
class UnackedMessage:
    """One delivered, unacknowledged message, as the Redis transport keeps it."""

    delivery_tag: str
    #: The body as the producer serialised it (for a Celery task: JSON ``[args, kwargs, embed]``).
    body: bytes
    #: The Celery task id (``headers["id"]``), or ``None`` for a message that is not a task.
    task_id: str | None = None


def _decode(tag: bytes | str, raw: bytes | str) -> UnackedMessage | None:
    try:
        message: dict[str, Any] = json.loads(raw)[0]
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
    except (KeyError, TypeError, ValueError, IndexError):
        return None  # not a kombu message: nothing of ours
    tag = tag.decode() if isinstance(tag, bytes) else str(tag)
    return UnackedMessage(tag, body.encode() if isinstance(body, str) else bytes(body), _task_id(message))


def iter_unacked(app: Celery) -> Iterator[UnackedMessage]:
    """Every message of ``app``'s broker delivered to some consumer and not yet acknowledged."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for tag, raw in channel.client.hscan_iter(channel.unacked_key):
            message = _decode(tag, raw)
            if message is not None:
                yield message


def _task_id(message: object) -> str | None:
    """The Celery task id of one kombu message (a decoded dict), or ``None`` for anything else."""
    headers = message.get("headers") if isinstance(message, dict) else None
    task_id = headers.get("id") if isinstance(headers, dict) else None
    return task_id if isinstance(task_id, str) else None


def _loads(raw: bytes | str) -> object:
    try:
        return json.loads(raw)
    except ValueError:  # includes UnicodeDecodeError: whatever else sits in Redis is not ours
        return None


def queued_task_ids(app: Celery, queue: str, *, page_size: int = 1000) -> set[str]:
    """Ids of the tasks whose message waits in ``queue`` or is delivered and not yet acknowledged.

    The unacknowledged hash is read first, then the list page by page from its newest end: a
    message a worker takes meanwhile moves away from where it is read next, so it can be missed,
    but none is ever invented. Callers must therefore treat a missing id as "maybe lost" and make
    a second message for the same task harmless. Costs about 1 s per 100,000 messages.
    """
    ids: set[str] = set()
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        client = channel.client
        for _tag, raw in client.hscan_iter(channel.unacked_key, count=page_size):
            entry = _loads(raw)
            task_id = _task_id(entry[0]) if isinstance(entry, list) and entry else None
            if task_id is not None:
                ids.add(task_id)
        for key in dict.fromkeys(channel._q_for_pri(queue, pri) for pri in channel.priority_steps):
            start = 0
            # New messages are pushed at index 0 and shift the rest up: a page may repeat, never skip.
            while page := client.lrange(key, start, start + page_size - 1):
                ids.update(filter(None, (_task_id(_loads(raw)) for raw in page)))
                start += page_size
    return ids


def unacked_by_task_id(app: Celery, task_ids: Collection[str]) -> dict[str, list[UnackedMessage]]:
    """The unacknowledged messages of these task ids, by id (a rerun may have sent one task twice)."""
    wanted, found = set(task_ids), {}
    for message in iter_unacked(app) if wanted else ():
        if message.task_id in wanted:
            found.setdefault(message.task_id, []).append(message)
    return found


def still_unacked(app: Celery, delivery_tags: Collection[str]) -> set[str]:
    """Which of ``delivery_tags`` are still delivered and unacknowledged (in the unacked hash)."""
    tags = list(delivery_tags)
    if not tags:
        return set()
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        values = channel.client.hmget(channel.unacked_key, tags)
    return {tag for tag, value in zip(tags, values, strict=True) if value is not None}


def restore_unacked(app: Celery, delivery_tags: Iterable[str]) -> None:
    """Put these unacknowledged messages back where consumers take the next one from."""
    with app.connection_for_write() as connection:
        qos = connection.default_channel.qos
        for tag in delivery_tags:
            qos.restore_by_tag(tag)


def publish_batch(producer: Producer, *, max_size: int) -> AbstractContextManager[Any]:
    """Buffer the publishes made through ``producer`` in the block, ``max_size`` per Redis round trip."""
    return producer.batch(max_size=max_size)


def in_flight_delivery_tags() -> set[str]:
    """Delivery tags of the requests this worker holds reserved or is running (its consumer's state).

    Call it in the worker's main process, where the consumer keeps these sets.
    """
    from celery.worker import state

    for _ in range(10):
        try:  # the consumer's thread changes these sets; a copy may catch one mid-change
            requests = [*state.reserved_requests, *state.active_requests]
            break
        except RuntimeError:
            continue
    else:
        raise RuntimeError("the worker's request sets kept changing")
    return {str(request.message.delivery_tag) for request in requests}
