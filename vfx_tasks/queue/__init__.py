"""The Celery queue: the app and its one task, workers, the producer, the Redis ledger, crash
recovery, progress, and the local cluster with its embedded Redis.

It may import every other package; nothing outside :mod:`vfx_tasks.cli` imports it. The kombu
internals it leans on (the Redis ``unacked`` hash, publish batches) live in ``_kombu.py`` alone.
"""
