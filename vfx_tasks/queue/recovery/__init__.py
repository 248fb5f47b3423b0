"""Crash and outage recovery: every delivered video is either finished or put back on the queue.

Each worker process records in Redis the deliveries it holds (:mod:`.holders`, written by its
:mod:`.reconciler` thread); every worker sweeps for deliveries no live process holds and puts them
back (:mod:`.sweeper`), and a worker restarted under its name takes back its predecessor's at once
(:mod:`.orphans`). A delivery's video is found by task id from the ledger (:mod:`.held`);
``vfx-status`` names the videos nobody holds (:mod:`.stranded`). The kombu and Celery internals
this needs are in :mod:`.internals` alone.
"""
