"""The Celery app, built from :class:`~vfx_tasks.settings.Settings` when asked for, never at import.

:func:`create_app` makes the app a producer sends with (it knows the task only by name);
:func:`vfx_tasks.queue.worker.create_worker_app` adds the task and the worker's bootsteps to it.
``celery -A vfx_tasks worker`` builds the worker's app from the environment in
``vfx_tasks/celery.py``, so a bad ``VFX_*`` variable stops the worker with its error instead of
breaking every ``import``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from vfx_tasks.settings import Settings

#: Stable name of the one task; producers send it by name, without importing the task code.
EXTRACT_VIDEO_TASK = "vfx.extract_video"


class VfxCelery(Celery):
    """A Celery app that keeps the :class:`Settings` it was built from (the task and the worker's
    bootsteps read them here, so nothing reads the environment a second time)."""

    def __init__(self, *args: Any, settings: Settings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings

    def __reduce_keys__(self) -> dict[str, Any]:
        return {**super().__reduce_keys__(), "settings": self.settings}


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for ``settings`` (see the settings' docstrings for the trade-offs)."""
    # Redis redelivers an unacknowledged task once the visibility timeout passes. Celery reads it
    # from three places (the broker's transport, the result backend's, and the top-level key);
    # set all three so no component falls back to kombu's one-hour default.
    visibility = {"visibility_timeout": settings.visibility_timeout_seconds}
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        # kombu looks for tasks past the visibility timeout every 10 s but, by default, scans only
        # on every 10th look: a task a vanished worker held waited up to 100 s more. Scan each time.
        "broker_transport_options": {**visibility, "unacked_restore_throttle": 1},
        "result_backend_transport_options": dict(visibility),
        "visibility_timeout": settings.visibility_timeout_seconds,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_default_queue": settings.queue_name,
        # A task is acknowledged only once it ended; a worker that dies gives it back.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One video at a time per process: a prefetched video would wait behind a long one.
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "result_extended": True,
        "result_expires": settings.result_expires_seconds,
        # Ride out Redis restarts: workers reconnect with backoff for as long as it takes (a worker
        # has nothing else to do), and a result stored while Redis is away waits for it instead of
        # failing a task whose features are written. Tasks cut off by the lost connection are
        # put back by the workers' sweeps (vfx_tasks.queue.recovery.sweeper).
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "result_backend_always_retry": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # A hung video becomes a failure with reason "timeout" (worker/task.py); None is Celery's "no limit".
        "task_soft_time_limit": settings.task_soft_time_limit_seconds or None,
        "task_time_limit": settings.task_time_limit_seconds or None,
        # Each pool process imports torch and mmaction2 when it starts (worker/lifecycle.py), so
        # that no task's time limit spans those imports: that takes seconds, more than the 4 s
        # Celery waits by default for a new process to say it is up.
        "worker_proc_alive_timeout": 120.0,
        "worker_hijack_root_logger": False,
    }


def create_app(settings: Settings, *, producer_only: bool = False) -> VfxCelery:
    """The Celery app for ``settings``, without the task's code (it is sent by name).

    ``producer_only`` is for enqueueing: no result backend (so sending a task does not subscribe
    to its result) and no ``task-sent`` event per task, which keeps enqueueing 100,000 videos fast.
    Workers still store every result, since the messages do not ask them not to.
    """
    celery_app = VfxCelery("vfx_tasks", settings=settings)
    config = celery_config(settings)
    if producer_only:
        config.update(result_backend=None, task_send_sent_event=False)
    celery_app.conf.update(config)
    return celery_app
