"""The kombu and Celery internals the queue leans on, in one place: the Redis transport's
``unacked`` hash, publish batches, the worker's sets of requests in flight, and how Celery
reports a task it cancelled.

Written against kombu 5.7 (pyproject asks for ``kombu>=5.7``, the first with ``Producer.batch``)
and Celery 5.7. What it relies on, and ``tests/queue/test_kombu_internals.py`` pins so that an
upgrade that changes any of it fails there first:

* The Redis transport keeps every delivered, unacknowledged message in the hash named by
  ``Channel.unacked_key`` (``"unacked"`` unless the ``unacked_key`` transport option says
  otherwise): delivery tag -> JSON ``[message, exchange, routing_key]``, where ``message`` is the
  payload kombu put on the queue, its body base64-encoded (``properties.body_encoding``), and
  the delivery's time (``time.time()`` of the consumer) as its score in the sorted set
  ``Channel.unacked_index_key``. Reading them is the only way to see which deliveries nobody has
  settled; kombu has no public API for it, and does not record who took a message.
* A message leaves both when it is acknowledged, rejected or restored. A restored message keeps
  its delivery tag (it is in the payload) and gets a new time when it is delivered again.
* Restoring is ``QoS._remove_from_indices`` and ``Channel._do_restore_message`` in one
  transaction (what ``QoS.restore_by_tag`` does): the message goes back to the end of its queue
  that consumers pop next.
* A queue is the Redis list named after it (``"<queue>\x06\x16<priority>"`` for priorities 3, 6,
  9), producers ``LPUSH`` kombu's JSON message onto it, and a Celery task message carries its
  task id in ``headers["id"]``.
* ``Producer.batch`` (new in kombu 5.7, public) buffers publishes into Redis pipelines of
  ``max_size`` messages: flushed when the block ends, discarded when it raises.
* ``celery.worker.state.reserved_requests``, ``scheduled_requests`` and ``active_requests``
  hold the requests a worker process has received and will still settle, each with its kombu
  ``message.delivery_tag``; Celery has no public way to list them from inside the worker.
* A task Celery cancels because the worker's connection broke is reported through
  ``Task.on_retry`` with a bare ``Retry`` and no exception info, and no retry message is sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.exceptions import Retry
from kombu import Producer


@dataclass(frozen=True)
class UnackedDelivery:
    """One delivered, unacknowledged message, as the Redis transport keeps it."""

    delivery_tag: str
    #: The Celery task id (``headers["id"]``), or ``None`` for a message that is not a task.
    task_id: str | None
    #: The queue it came from and goes back to.
    routing_key: str
    #: When it was delivered (``time.time()`` of the consumer that took it), ``None`` when it was
    #: delivered while being read; a message put back and delivered again keeps its tag and gets
    #: a new time.
    delivered_at: float | None


def _decode(tag: str, raw: bytes | str, delivered_at: float | None) -> UnackedDelivery | None:
    entry = _loads(raw)
    if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], str)):
        return None  # not a kombu delivery: nothing of ours
    return UnackedDelivery(tag, _task_id(entry[0]), entry[2], delivered_at)


def unacked_deliveries(app: Celery, *, page_size: int = 1000) -> list[UnackedDelivery]:
    """Every message of ``app``'s broker delivered to some consumer and not yet acknowledged."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        client = channel.client
        # The index first: a delivery made after it was read shows without its time.
        times = {
            _text(tag): score for tag, score in client.zscan_iter(channel.unacked_index_key, count=page_size)
        }
        entries = client.hscan_iter(channel.unacked_key, count=page_size)
        found = [_decode(tag, raw, times.get(tag)) for tag, raw in ((_text(t), r) for t, r in entries)]
    return [delivery for delivery in found if delivery is not None]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
    delivered = {d.task_id for d in unacked_deliveries(app, page_size=page_size) if d.task_id is not None}
    return delivered | waiting_task_ids(app, queue, page_size=page_size)


def waiting_task_ids(app: Celery, queue: str, *, page_size: int = 1000) -> set[str]:
    """Ids of the tasks whose message waits in ``queue`` (not yet delivered)."""
    ids: set[str] = set()
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        client = channel.client
        for key in dict.fromkeys(channel._q_for_pri(queue, pri) for pri in channel.priority_steps):
            start = 0
            # New messages are pushed at index 0 and shift the rest up: a page may repeat, never skip.
            while page := client.lrange(key, start, start + page_size - 1):
                ids.update(filter(None, (_task_id(_loads(raw)) for raw in page)))
                start += page_size
    return ids


def restore_unchanged(app: Celery, deliveries: Iterable[UnackedDelivery]) -> list[UnackedDelivery]:
    """Put these deliveries back where consumers take the next message from; return those put back.

    Each only while it is still the same delivery: still unacknowledged, with the delivery time
    it was seen with. One that was settled meanwhile, or put back and taken again by a consumer
    (same tag, a new time), is left alone: that consumer holds it now. The check and the restore
    are one transaction (``WATCH`` on kombu's two keys), as kombu's own ``restore_by_tag`` is.
    """
    restored = []
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        qos = channel.qos

        for delivery in deliveries:

            def restore(pipe: Any, delivery: UnackedDelivery = delivery) -> bool:
                tag = delivery.delivery_tag
                score = pipe.zscore(channel.unacked_index_key, tag)
                raw = pipe.hget(channel.unacked_key, tag)
                if raw is None or score is None or score != delivery.delivered_at:
                    return False
                message, exchange, routing_key = json.loads(raw)
                pipe.multi()
                qos._remove_from_indices(tag, pipe)
                channel._do_restore_message(message, exchange, routing_key, pipe, False)
                return True

            keys = (channel.unacked_key, channel.unacked_index_key)
            if channel.client.transaction(restore, *keys, value_from_callable=True):
                restored.append(delivery)
    return restored


def publish_batch(producer: Producer, *, max_size: int) -> AbstractContextManager[Any]:
    """Buffer the publishes made through ``producer`` in the block, ``max_size`` per Redis round trip."""
    return producer.batch(max_size=max_size)


def in_flight_deliveries() -> dict[str, str]:
    """``delivery tag -> task id`` of the requests this worker will still settle itself: received
    (reserved), waiting for their countdown (scheduled) or running (active), per its consumer.

    Call it in the worker's main process, where the consumer keeps these sets. A request Celery
    dropped when its connection broke (``Consumer.on_close``) or cancelled (``Request.cancel``)
    is in none of them, though its message is still unacknowledged.
    """
    from celery.worker import state

    for _ in range(10):
        try:  # the consumer's thread changes these sets; a copy may catch one mid-change
            requests = [*state.reserved_requests, *state.active_requests, *state.scheduled_requests]
            break
        except RuntimeError:
            continue
    else:
        raise RuntimeError("the worker's request sets kept changing")
    return {str(request.message.delivery_tag): str(request.id) for request in requests}


def is_cancellation(exc: BaseException, einfo: object) -> bool:
    """Whether ``Task.on_retry`` was called by Celery cancelling the task, not by a retry.

    ``worker_cancel_long_running_tasks_on_connection_loss`` ends the tasks in flight when the
    worker's connection breaks, and ``Request._announce_cancelled`` reports each through
    ``on_retry`` with a bare ``Retry`` and no exception info; no retry message was sent.
    """
    return einfo is None and isinstance(exc, Retry) and exc.sig is None
