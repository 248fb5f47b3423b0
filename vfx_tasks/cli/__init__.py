"""Command-line entry points: ``vfx-enqueue``, ``vfx-worker``, ``vfx-status``, ``vfx-download-models``.

Only click and the presentation of results live here; the work is done by :mod:`vfx_tasks.queue`
and :mod:`vfx_tasks.models`. Every option also reads ``VFX_<PARAMETER NAME>`` (shown in ``--help``).

Exit codes shared by all of them, as the project promises: 0 all done, 1 some videos failed,
2 usage error, which includes a broker (Redis) or another required service that cannot be
reached at the address given (the message says which). Beyond those: 4 when ``--wait-timeout``
passed with videos still queued, 130 when interrupted (Ctrl-C).
"""

from vfx_tasks.queue.processes.launch import POOLS  # re-exported: the choices of --pool

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_TIMEOUT", "EXIT_USAGE", "POOLS"]
