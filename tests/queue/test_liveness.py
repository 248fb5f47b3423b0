"""Which workers the dead-worker sweeper declares dead, and what a sweep puts back (``recovery/liveness.py``).

Real Redis, real Celery remote-control pings, a fake clock. In the fast tests no worker runs, so
no name answers a ping: every holder but the sweeper's own worker is missing from its first
sweep. The slow test starts a real worker to answer.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from celery import Celery

from tests.conftest import WorkerProcess, run_spec
from tests.queue.helpers import HELD_QUEUE, hold_unacknowledged, wait_until_answering
from vfx_tasks.queue.app import create_app
from vfx_tasks.queue.job import Run
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.recovery.held import HeldVideo
from vfx_tasks.queue.recovery.internals import iter_unacked
from vfx_tasks.queue.recovery.liveness import DeadWorkerSweeper
from vfx_tasks.settings import Settings

#: The worker the sweeper runs in.
ME = "me@box"
CONFIRM_SECONDS = 30.0


class FakeClock:
    """A monotonic clock the test sets."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def held(redis_url: str) -> Iterator[ExitStack]:
    """The connections holding messages unacknowledged, as dead consumers; closed (their messages
    given back) at the end of the test, while its Redis still runs."""
    with ExitStack() as stack:
        yield stack


def setup(redis_url: str, tmp_path: Path) -> tuple[Celery, Ledger, Run, FakeClock, DeadWorkerSweeper]:
    """The app (on a queue no worker consumes), a ledger with one run, and this worker's sweeper."""
    app = create_app(Settings.from_env({}, broker_url=redis_url, queue_name=HELD_QUEUE))
    ledger, run, clock = Ledger.from_url(redis_url), run_spec(tmp_path / "out"), FakeClock()
    ledger.register_run(run)
    return app, ledger, run, clock, DeadWorkerSweeper(app, ME, confirm_seconds=CONFIRM_SECONDS, clock=clock)


def test_a_holder_is_dead_once_it_has_answered_no_ping_for_confirm_seconds(
    redis_url: str, tmp_path: Path
) -> None:
    _, ledger, run, clock, sweeper = setup(redis_url, tmp_path)
    # Given a worker the ledger shows running a video, that answers no ping,
    ledger.mark_started(run.run_id, "v", "gone@box")
    # it is not dead when first found missing, nor just before CONFIRM_SECONDS have passed,
    assert sweeper.dead_holders(ledger) == set()
    clock.now = CONFIRM_SECONDS - 0.5
    assert sweeper.dead_holders(ledger) == set()
    # and is once they have.
    clock.now = CONFIRM_SECONDS
    assert sweeper.dead_holders(ledger) == {"gone@box"}


def test_a_holder_that_held_nothing_for_a_while_starts_over(redis_url: str, tmp_path: Path) -> None:
    _, ledger, run, clock, sweeper = setup(redis_url, tmp_path)
    # Given a worker missing since the first sweep,
    ledger.mark_started(run.run_id, "v", "gone@box")
    assert sweeper.dead_holders(ledger) == set()
    # when the ledger shows it running nothing at one sweep (its video ended),
    ledger.release_attempt(run.run_id, "v", "gone@box")
    clock.now = 1.0
    assert sweeper.dead_holders(ledger) == set()
    # and running a video again later, it is missing from then on, not from the first sweep.
    ledger.mark_started(run.run_id, "w", "gone@box")
    clock.now = 2.0
    assert sweeper.dead_holders(ledger) == set()
    clock.now = 2.0 + CONFIRM_SECONDS - 0.5
    assert sweeper.dead_holders(ledger) == set()
    clock.now = 2.0 + CONFIRM_SECONDS
    assert sweeper.dead_holders(ledger) == {"gone@box"}


def test_this_worker_never_counts_itself(redis_url: str, tmp_path: Path) -> None:
    _, ledger, run, clock, sweeper = setup(redis_url, tmp_path)
    # Given the ledger shows this very worker running a video (it does not answer its own pings),
    ledger.mark_started(run.run_id, "v", ME)
    # then however long it goes on, it is never dead to itself.
    assert sweeper.dead_holders(ledger) == set()
    clock.now = 10 * CONFIRM_SECONDS
    assert sweeper.dead_holders(ledger) == set()


def test_a_sweep_puts_back_exactly_the_messages_of_dead_holders_and_counts_their_deaths(
    redis_url: str, tmp_path: Path, held: ExitStack
) -> None:
    app, ledger, run, clock, sweeper = setup(redis_url, tmp_path)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    # Given unacknowledged messages of a video running on a worker that is gone, of one running
    # on this worker, of one no worker runs, and one forged with the gone worker's video's
    # arguments under another task id,
    for relative_id in ("lost", "mine", "idle"):
        held.enter_context(hold_unacknowledged(redis_url, run, relative_id))
    held.enter_context(hold_unacknowledged(redis_url, run, "lost", task_id=str(uuid.uuid4())))
    ledger.mark_started(run.run_id, "lost", "gone@box")
    ledger.mark_started(run.run_id, "mine", ME)
    tags = {message.task_id: message.delivery_tag for message in iter_unacked(app)}
    assert len(tags) == 4
    lost_tag = tags[run.task_id("lost")]
    # when the gone worker has answered no ping for less than CONFIRM_SECONDS, nothing goes back;
    assert sweeper.sweep(ledger) == []
    assert set(client.hkeys("unacked")) == set(tags.values()) and client.llen(HELD_QUEUE) == 0
    # once it has, exactly the message of its video (found by task id) goes back to the queue,
    clock.now = CONFIRM_SECONDS
    assert sweeper.sweep(ledger) == [HeldVideo("gone@box", run.run_id, "lost", lost_tag)]
    assert set(client.hkeys("unacked")) == set(tags.values()) - {lost_tag}
    assert [json.loads(raw)["headers"]["id"] for raw in client.lrange(HELD_QUEUE, 0, -1)] == [
        run.task_id("lost")
    ]
    # and its attempt ends as a death: no longer running, still counted (see max_redeliveries);
    assert ledger.entries(run.run_id, "running") == {"mine": ME}
    assert ledger.entries(run.run_id, "deliveries") == {"lost": "1", "mine": "1"}
    # a later sweep finds nothing more to put back.
    clock.now = 2 * CONFIRM_SECONDS
    assert sweeper.sweep(ledger) == []
    assert client.llen(HELD_QUEUE) == 1


@pytest.mark.slow
def test_a_holder_that_answers_again_starts_over(
    redis_url: str, tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    app, ledger, run, clock, sweeper = setup(redis_url, tmp_path)
    name = f"back@{socket.gethostname()}"
    # Given a worker the ledger shows running a video, missing at the first sweep (not started yet),
    ledger.mark_started(run.run_id, "v", name)
    assert sweeper.dead_holders(ledger) == set()
    # when it answers pings at a sweep past CONFIRM_SECONDS, it is alive,
    worker = start_worker(name="back@%h")
    wait_until_answering(app, name, worker)
    clock.now = CONFIRM_SECONDS + 10
    assert sweeper.dead_holders(ledger) == set()
    # and once it is gone again, it is missing from then on, not from the first sweep.
    worker.stop()
    clock.now = CONFIRM_SECONDS + 20
    assert sweeper.dead_holders(ledger) == set()
    clock.now = 2 * CONFIRM_SECONDS + 20
    assert sweeper.dead_holders(ledger) == {name}
