"""Options several commands share, defined once; and what every command is built with.

Each option reads ``VFX_<PARAMETER NAME>`` (``--broker-url`` reads ``VFX_BROKER_URL``) through
``auto_envvar_prefix``; a flag given on the command line wins over its variable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_args

import click

from vfx_tasks import __version__
from vfx_tasks.cli import POOLS
from vfx_tasks.cli._help import VfxOption
from vfx_tasks.errors import ConfigurationError, DependencyError
from vfx_tasks.models import get_model_spec

F = TypeVar("F", bound=Callable[..., Any])

#: ``context_settings`` of every command.
CONTEXT_SETTINGS: dict[str, Any] = {
    "auto_envvar_prefix": "VFX",
    "show_default": True,
    "help_option_names": ["-h", "--help"],
    "max_content_width": 100,
}

#: Where a worker runs its model: ``auto`` picks CUDA when a GPU is visible.
Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[Device, ...] = get_args(Device)


def option(*param_decls: str, group: str | None = None, **attrs: Any) -> Callable[[F], F]:
    """``click.option`` that shows its variable in ``--help``, listed in the section ``group``."""
    return click.option(*param_decls, cls=VfxOption, group=group, **attrs)


def version_option(prog_name: str) -> Callable[[F], F]:
    """``--version``, answered as ``<prog_name>, version <version>``."""
    # Not from VFX_VERSION: a variable must not turn every run into a version query.
    return click.version_option(__version__, "--version", prog_name=prog_name, allow_from_autoenv=False)


def validate_model(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The model's full name for a name or alias; ``click.BadParameter`` listing the names if
    unknown, or saying why a model-zoo model cannot run here."""
    if value is None:
        return None
    try:
        return get_model_spec(value).name
    except (ConfigurationError, DependencyError) as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None


def model_option(
    *, default: str | None, help: str, group: str | None = None, **attrs: Any
) -> Callable[[F], F]:
    """``--model``: a name or alias, passed on as the full name."""
    return option("--model", group=group, default=default, callback=validate_model, help=help, **attrs)


def broker_url_option(*, help: str = "Redis URL of the queue.", group: str | None = None) -> Callable[[F], F]:
    """``--broker-url``: Redis URL of the queue (default: ``Settings.broker_url``)."""
    return option("--broker_url", "--broker-url", group=group, help=help)


def output_dir_option(*, help: str, group: str | None = None) -> Callable[[F], F]:
    """``--output-dir``: the output root, where ``<relative_dir>/<id>.npy`` files go."""
    return option(
        "--output_dir",
        "--output-dir",
        group=group,
        type=click.Path(file_okay=False),
        default="./data/outputs/feature/",
        help=help,
    )


def pretrained_dir_option(*, help: str, group: str | None = None) -> Callable[[F], F]:
    """``--pretrained-dir``: the folder with the checkpoints (default: ``Settings.pretrained_dir``)."""
    return option(
        "--pretrained_dir", "--pretrained-dir", group=group, type=click.Path(file_okay=False), help=help
    )


def device_option(*, default: str | None, help: str, group: str | None = None) -> Callable[[F], F]:
    """``--device``: one of :data:`DEVICES`."""
    return option("--device", group=group, type=click.Choice(DEVICES), default=default, help=help)


def concurrency_option(*, help: str, group: str | None = None) -> Callable[[F], F]:
    """``--concurrency`` / ``-c``: videos a worker processes at once (default: chosen by the worker)."""
    return option("--concurrency", "-c", group=group, type=click.IntRange(min=1), default=None, help=help)


def pool_option(*, help: str, group: str | None = None) -> Callable[[F], F]:
    """``--pool``: one of :data:`POOLS` (default: chosen by the worker)."""
    return option("--pool", group=group, type=click.Choice(POOLS), default=None, help=help)


def keep_downloads_option(*, help: str, group: str | None = None) -> Callable[[F], F]:
    """``--keep-downloads``: keep the videos fetched from the Hub."""
    # default None, not False: given neither as flag nor as variable, the settings' default holds.
    return option("--keep-downloads", "--keep_downloads", group=group, is_flag=True, default=None, help=help)
