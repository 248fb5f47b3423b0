"""Command-line entry points: ``vfx-enqueue``, ``vfx-worker`` and ``vfx-status``.

Exit codes shared by all of them: 0 success, 1 some videos failed, 2 usage error,
3 the broker (Redis) or another required service is unavailable, 4 ``--wait-timeout`` passed.
"""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130
