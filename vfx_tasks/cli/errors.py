"""The one exception the commands raise to stop with a message and an exit code."""

from __future__ import annotations

import click

from vfx_tasks.cli import EXIT_TIMEOUT, EXIT_USAGE
from vfx_tasks.errors import BrokerUnavailableError, ConfigurationError, VfxError, WaitTimeoutError
from vfx_tasks.redaction import redact

#: Exit code of each error kind, first match wins. A service that cannot be reached at the address
#: given (Redis, the Hub, the local workers) counts as a usage error: the address is an argument.
_EXIT_CODES: tuple[tuple[type[VfxError], int], ...] = (
    (WaitTimeoutError, EXIT_TIMEOUT),
    (ConfigurationError, EXIT_USAGE),
    (BrokerUnavailableError, EXIT_USAGE),
)
_OTHER_EXIT_CODE = EXIT_USAGE  # weights, a tool or another service missing


class CliError(click.ClickException):
    """An error click prints as ``Error: <message>`` before exiting with ``exit_code``."""

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def cli_error(error: VfxError) -> CliError:
    """The :class:`CliError` for ``error``: its message (secrets masked) and the exit code of its kind."""
    exit_code = next((code for kind, code in _EXIT_CODES if isinstance(error, kind)), _OTHER_EXIT_CODE)
    # Any message may quote a URL given by the user (VFX_BROKER_URL): its password is never printed.
    return CliError(redact(str(error)), exit_code=exit_code)
