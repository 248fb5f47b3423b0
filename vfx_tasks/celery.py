"""Where ``celery -A vfx_tasks`` finds the app (Celery looks for a ``celery`` module in the package).

The app itself, and how it is configured, live in :mod:`vfx_tasks.queue.app`.
"""

from vfx_tasks.queue.app import app

__all__ = ["app"]
