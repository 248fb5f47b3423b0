"""Crash and outage recovery: every delivered video is either finished or put back on the queue.

Three cases, one finder (:mod:`.held`, by task id): a worker restarted under its name takes back
what it held (:mod:`.orphans`); live workers take back what dead workers held (:mod:`.liveness`);
a worker whose Redis connection broke puts back what Celery cancelled (:mod:`.reconciler`). The
kombu and Celery internals this needs are in :mod:`.internals` alone.
"""
