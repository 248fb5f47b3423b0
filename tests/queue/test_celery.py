"""The Celery app: found by ``celery -A vfx_tasks``, configured for long, crash-safe tasks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from celery.app.utils import find_app
from celery.exceptions import Reject

from tests.conftest import REPO_DIR
from vfx_tasks.errors import (
    BrokerUnavailableError,
    MemoryLimitError,
    NameTooLongError,
    OutputError,
    PermanentError,
    TransientError,
)
from vfx_tasks.queue.app import EXTRACT_VIDEO_TASK, create_app
from vfx_tasks.queue.worker import create_worker_app
from vfx_tasks.queue.worker.lifecycle import Recovery
from vfx_tasks.queue.worker.task import RETRY_BASE_SECONDS, _errors_as_stored
from vfx_tasks.settings import Settings


def test_celery_cli_finds_the_worker_app_from_the_package_name() -> None:
    import vfx_tasks.celery

    app = find_app("vfx_tasks")
    assert app is vfx_tasks.celery.app
    app.loader.import_default_modules()  # what a worker does at start-up
    assert EXTRACT_VIDEO_TASK in app.tasks
    assert Recovery in app.steps["worker"]


def test_a_bad_variable_breaks_no_import_and_stops_only_the_worker_app() -> None:
    # Given a malformed setting in the environment,
    env = {"VFX_MAX_RETRIES": "many", "PYTHONPATH": str(REPO_DIR)}
    # the modules that producers, commands and tests import still import,
    code = "import vfx_tasks.queue.app, vfx_tasks.queue.worker, vfx_tasks.cli.enqueue, vfx_tasks.cli.worker"
    imported = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    # and only building the worker's app (celery -A vfx_tasks) stops, naming the variable.
    built = subprocess.run(
        [sys.executable, "-c", "import vfx_tasks.celery"], env=env, capture_output=True, text=True
    )
    assert built.returncode != 0 and "VFX_MAX_RETRIES" in built.stderr


def test_configuration_follows_settings() -> None:
    settings = Settings.from_env({}, broker_url="redis://h:1/0", visibility_timeout_seconds=999)
    conf = create_app(settings).conf
    assert conf.broker_url == conf.result_backend == "redis://h:1/0"
    # The visibility timeout is set in all three places Redis-backed Celery reads it from.
    assert conf.broker_transport_options["visibility_timeout"] == 999
    assert conf.result_backend_transport_options["visibility_timeout"] == 999
    assert conf.visibility_timeout == 999
    assert conf.accept_content == ["json"] and conf.task_serializer == conf.result_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_track_started and conf.worker_send_task_events
    assert conf.broker_connection_retry_on_startup
    assert conf.worker_cancel_long_running_tasks_on_connection_loss


def test_producer_app_neither_subscribes_to_results_nor_sends_events() -> None:
    conf = create_app(Settings.from_env({}), producer_only=True).conf
    assert conf.result_backend is None and not conf.task_send_sent_event


def test_transient_errors_are_retried_through_celerys_task_options() -> None:
    settings = Settings.from_env({}, max_retries=5, retry_backoff_max_seconds=77)
    task = create_worker_app(settings).tasks[EXTRACT_VIDEO_TASK]
    assert task.autoretry_for == (TransientError,)
    assert task.retry_backoff == RETRY_BASE_SECONDS
    assert task.retry_backoff_max == 77
    assert task.retry_jitter and task.max_retries == 5


def test_a_retry_that_cannot_be_sent_keeps_the_original_message() -> None:
    from vfx_tasks.queue.processes.redis_server import free_port

    # Given the worker's task on a broker that does not answer (Redis gone while a task retries),
    settings = Settings.from_env({}, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    app = create_worker_app(settings)
    app.conf.update(result_backend=None)  # what fails is the send, not a result store with its retries
    task = app.tasks[EXTRACT_VIDEO_TASK]
    task.push_request(id="t-1", retries=0, kwargs={"run_id": "r", "relative_id": "v"}, called_directly=False)
    try:
        # when it retries after a transient error and cannot send the retry,
        with pytest.raises(Reject) as rejected:
            task.retry(exc=BrokerUnavailableError("Redis went away"))
    finally:
        task.pop_request()
    # then the original message is rejected back onto the queue, not dropped with the video.
    assert rejected.value.requeue


def test_a_name_too_long_for_the_file_system_is_permanent_and_running_out_of_memory_is_transient(
    tmp_path: Path,
) -> None:
    settings = Settings.from_env({}, memory_limit_mb=512)
    # Given a write that the file system refuses with ENAMETOOLONG (a name of 300 bytes),
    with pytest.raises(NameTooLongError, match="ENAMETOOLONG") as info:
        with _errors_as_stored("v", settings):
            try:
                os.open(tmp_path / ("n" * 300), os.O_WRONLY | os.O_CREAT)
            except OSError as e:
                raise OutputError(f"Cannot write features: {e}.") from e  # as storage reports it
    # then the task fails at once instead of retrying what no retry shortens,
    assert isinstance(info.value, PermanentError) and info.value.code == "name_too_long"
    # and a MemoryError (which Celery treats as fatal) leaves the task as a retried memory_limit.
    with pytest.raises(MemoryLimitError, match="VFX_MEMORY_LIMIT_MB=512") as memory:
        with _errors_as_stored("v", settings):
            raise MemoryError()
    assert isinstance(memory.value, TransientError)
