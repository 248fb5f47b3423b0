"""Where ``celery -A vfx_tasks`` finds the app (Celery looks for a ``celery`` module in the package).

Only a worker imports this module: it builds the worker's app from the ``VFX_*`` environment
(:func:`vfx_tasks.queue.worker.create_worker_app`), so that a bad variable stops the worker with
its error, and nothing else pays for it at import.
"""

from vfx_tasks.queue.worker import create_worker_app
from vfx_tasks.settings import Settings

app = create_worker_app(Settings.from_env())

__all__ = ["app"]
