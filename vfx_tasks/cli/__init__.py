"""Command-line entry points: ``vfx-enqueue``, ``vfx-worker`` and ``vfx-status``.

Exit codes shared by all of them, as the project promises: 0 all done, 1 some videos failed,
2 usage error, which includes a broker (Redis) or another required service that cannot be
reached at the address given (the message says which). Beyond those: 4 when ``--wait-timeout``
passed with videos still queued, 130 when interrupted (Ctrl-C).
"""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: Same code as a usage error: the address given (or defaulted) does not answer.
EXIT_UNAVAILABLE = EXIT_USAGE
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130

#: The Celery pools a worker may run (``--pool``), each with ``--concurrency`` videos in flight.
#: ``prefork``: one process per video in flight, each loading its own model; a crash in one video
#: takes down only its process. ``threads``: one process whose videos share one model (less
#: device memory); a crash stops the whole worker, and its tasks are redelivered.
POOLS = ("prefork", "threads")
