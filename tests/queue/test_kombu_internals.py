"""Pins the kombu and Celery behaviour :mod:`vfx_tasks.queue.recovery.internals` relies on (kombu's
against a real Redis).

When a kombu upgrade changes the Redis transport's ``unacked`` hash, how a message is restored,
or publish batches, these tests fail before crash recovery or enqueueing silently stop working.
"""

from __future__ import annotations

import base64
import json
import time
from contextlib import nullcontext

import pytest
import redis
from celery import Celery
from celery.exceptions import Retry
from kombu import Connection

from tests.queue.helpers import take_without_ack
from vfx_tasks.queue.app import EXTRACT_VIDEO_TASK, create_app
from vfx_tasks.queue.recovery.internals import (
    in_flight_deliveries,
    is_cancellation,
    publish_batch,
    restore_unchanged,
    unacked_deliveries,
)
from vfx_tasks.settings import Settings

#: A queue no worker consumes: messages stay where the test puts them.
QUEUE = "kombu-pinned"


def held_app(redis_url: str) -> Celery:
    return create_app(Settings.from_env({}, broker_url=redis_url, queue_name=QUEUE))


def take_kwargs_without_ack(connection: Connection) -> dict[str, object]:
    """The kwargs of the next task on the queue, taken as a worker does, and left unacknowledged."""
    return take_without_ack(connection, QUEUE).decode()[1]


def test_unacked_messages_are_kept_in_the_hash_the_module_reads(redis_url: str) -> None:
    app, client = held_app(redis_url), redis.Redis.from_url(redis_url)
    # Given a task sent by Celery and taken by a consumer that does not acknowledge it,
    sent = app.send_task(EXTRACT_VIDEO_TASK, kwargs={"run_id": "r", "relative_id": "a/v"})
    with app.connection_for_read() as connection:
        before = time.time()
        assert take_kwargs_without_ack(connection) == {"run_id": "r", "relative_id": "a/v"}
        # then kombu keeps it in the "unacked" hash: tag -> JSON [message, exchange, routing_key],
        (tag,) = client.hkeys("unacked")
        message, exchange, routing_key = json.loads(client.hget("unacked", tag))
        assert (exchange, routing_key) == ("", QUEUE)
        # the message's body base64-encoded Celery protocol 2 JSON: [args, kwargs, embed],
        assert message["properties"]["body_encoding"] == "base64"
        args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        assert (args, kwargs) == ([], {"run_id": "r", "relative_id": "a/v"})
        # with the time of its delivery as its score in "unacked_index",
        delivered_at = client.zscore("unacked_index", tag)
        assert before <= delivered_at <= time.time()
        # and the module reads exactly that.
        (unacked,) = unacked_deliveries(app)
        assert unacked.delivery_tag == tag.decode()
        assert unacked.task_id == sent.id
        assert (unacked.routing_key, unacked.delivered_at) == (QUEUE, delivered_at)


def test_restoring_puts_the_message_back_at_the_head_of_its_queue(redis_url: str) -> None:
    app, client = held_app(redis_url), redis.Redis.from_url(redis_url)
    # Given two queued tasks, the first taken and not acknowledged by a consumer that died,
    for relative_id in ("first", "second"):
        app.send_task(EXTRACT_VIDEO_TASK, kwargs={"relative_id": relative_id})
    with app.connection_for_read() as dead:
        assert take_kwargs_without_ack(dead)["relative_id"] == "first"
        # when it is restored,
        (unacked,) = unacked_deliveries(app)
        assert restore_unchanged(app, [unacked]) == [unacked]
        # then it leaves the unacked bookkeeping and is the next task any consumer gets,
        assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0
        assert unacked_deliveries(app) == []
        with app.connection_for_read() as alive:
            assert take_kwargs_without_ack(alive)["relative_id"] == "first"
            # under the same delivery tag, delivered anew.
            (again,) = unacked_deliveries(app)
            assert again.delivery_tag == unacked.delivery_tag
            assert again.delivered_at is not None and again.delivered_at > (unacked.delivered_at or 0)
            # The delivery seen before is not that one: restoring it leaves the new holder's alone.
            assert restore_unchanged(app, [unacked]) == []
            assert client.hexists("unacked", unacked.delivery_tag) and client.llen(QUEUE) == 1


def test_a_settled_delivery_is_not_restored(redis_url: str) -> None:
    app, client = held_app(redis_url), redis.Redis.from_url(redis_url)
    app.send_task(EXTRACT_VIDEO_TASK, kwargs={"relative_id": "v"})
    with app.connection_for_read() as connection:
        message = take_without_ack(connection, QUEUE)
        (seen,) = unacked_deliveries(app)
        # Given a delivery acknowledged after it was seen unacknowledged,
        message.ack()
        # restoring what was seen puts nothing back.
        assert restore_unchanged(app, [seen]) == []
        assert client.llen(QUEUE) == 0 and client.hlen("unacked") == 0


@pytest.mark.parametrize("fails", [False, True])
def test_a_publish_batch_is_written_at_its_end_or_not_at_all(redis_url: str, fails: bool) -> None:
    app, client = held_app(redis_url), redis.Redis.from_url(redis_url)
    with app.producer_or_acquire() as producer:
        with pytest.raises(RuntimeError) if fails else nullcontext():
            with publish_batch(producer, max_size=100):
                for n in range(3):
                    producer.publish({"n": n}, routing_key=QUEUE, exchange="")
                # Inside the block nothing has reached Redis: it goes in one round trip at the end,
                assert client.llen(QUEUE) == 0
                if fails:
                    raise RuntimeError("the producer gave up")
    # unless the block raised: then nothing is sent.
    assert client.llen(QUEUE) == (0 if fails else 3)



def test_a_workers_requests_in_flight_are_in_celerys_state_sets() -> None:
    from celery.worker import state

    class Message:
        delivery_tag = "tag-1"

    class Request:
        id = "task-1"
        message = Message()

    # Celery keeps a worker's received, scheduled (countdown) and running requests in these three
    # sets (its own code adds and removes them); the module reads their tags and task ids.
    request = Request()
    for requests in (state.reserved_requests, state.scheduled_requests, state.active_requests):
        requests.add(request)
        try:
            assert in_flight_deliveries() == {"tag-1": "task-1"}
        finally:
            requests.discard(request)
    assert in_flight_deliveries() == {}


def test_celery_reports_a_task_it_cancels_as_a_bare_retry_without_exception_info() -> None:
    from celery.contrib.testing.mocks import TaskMessage
    from celery.worker.request import Request

    app = Celery("pinned", set_as_current=False)
    seen: list[tuple[BaseException, object]] = []

    @app.task(name="pinned.task", bind=True, acks_late=True, shared=False)
    def task(self: object) -> None: ...

    task.on_retry = lambda exc, task_id, args, kwargs, einfo: seen.append((exc, einfo))
    # When the worker's connection breaks, Celery cancels each running late-acknowledged task
    # (Consumer.on_connection_error_after_connected -> Request.cancel -> _announce_cancelled),
    request = Request(TaskMessage("pinned.task", id="t-1"), app=app, task=task)
    request._announce_cancelled()
    # and tells the task through on_retry, without exception info and without a retry signature,
    ((exc, einfo),) = seen
    assert is_cancellation(exc, einfo)
    # which a real retry always has (its exception info is a Celery ExceptionInfo).
    assert not is_cancellation(Retry("retry", sig=task.s()), object())
