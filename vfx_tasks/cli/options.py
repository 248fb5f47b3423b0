"""Options several commands share, defined once; and what every command is built with.

Each option reads ``VFX_<PARAMETER NAME>`` (``--broker-url`` reads ``VFX_BROKER_URL``); a flag
given on the command line wins over its variable. Options for a :class:`~vfx_tasks.settings.Settings`
field (:func:`setting_option`) leave their variable to ``Settings.from_env``, the one parser of those
variables: click shows it in ``--help`` but does not read it, so the two can never disagree.
The options of a :class:`~vfx_tasks.extract.recipe.Recipe` are made from its fields
(:func:`recipe_options`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_args

import click

from vfx_tasks import __version__
from vfx_tasks.cli import POOLS
from vfx_tasks.cli._help import VfxOption
from vfx_tasks.errors import ConfigurationError, DependencyError
from vfx_tasks.extract.recipe import Recipe, choices, setting_fields
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


class SettingOption(VfxOption):
    """An option for a :class:`~vfx_tasks.settings.Settings` field: its ``VFX_*`` variable is shown
    in ``--help`` but read by ``Settings.from_env`` only (given neither, the value is ``None``)."""

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        return None


def setting_option(*param_decls: str, field: str, group: str | None = None, **attrs: Any) -> Callable[[F], F]:
    """An option passed to ``Settings.from_env`` as the override of ``field`` (default ``None``)."""
    attrs.setdefault("default", None)
    return click.option(
        *param_decls, cls=SettingOption, envvar=f"VFX_{field.upper()}", group=group, **attrs
    )


#: Popular model-zoo aliases that ``--model``'s help names (``vfx-models`` lists every model).
POPULAR_ZOO_ALIASES = ("x3d", "slowfast", "tsm", "videomae")


def recipe_options(*, group: str) -> Callable[[F], F]:
    """One option per :class:`~vfx_tasks.extract.recipe.Recipe` field that has one (``--crop_type``
    and ``--crop-type`` for ``crop_type``), each with the field's default, choices and help.

    ``--model`` and the text fields that may be left empty default to ``None`` (the recipe's
    default then holds), so that a model name given alongside ``--model-config`` can be told from
    the default one.
    """

    def decorate(command: F) -> F:
        for name, (kind, default, info) in reversed(setting_fields().items()):
            if not info.option:
                continue
            attrs: dict[str, Any] = {"default": default, "help": info.help or None}
            if name == "model":
                attrs.update(
                    default=None,
                    callback=validate_model,
                    show_default=get_model_spec(default).aliases[0],
                    help=f"i3d, swin-t, or a zoo model: {', '.join(POPULAR_ZOO_ALIASES)}... "
                    "(see vfx-models).",
                )
            elif (allowed := choices(kind)) is not None:
                attrs["type"] = click.Choice(allowed)
            elif kind is int:
                attrs.update(type=int, callback=minus_one_or_positive(info.maximum))
            elif default == "":
                attrs.update(default=None, show_default=False)
            spellings = dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}"])
            command = option(*spellings, group=group, **attrs)(command)
        return command

    return decorate


def recipe_from(params: dict[str, Any]) -> Recipe:
    """The :class:`Recipe` of a command's parameters (those made by :func:`recipe_options`), which
    are taken out of ``params``; options left out (``None``) take the recipe's defaults.

    Raises:
        ConfigurationError: the values do not make a recipe, e.g. a model name and a config.
    """
    given = {name: params.pop(name) for name, (_, _, info) in setting_fields().items() if info.option}
    if given["model"] is not None and given["model_config"] is not None:
        raise ConfigurationError(
            f"Give either a model name (--model {given['model']}) or your own config with its weights "
            "(--model-config and --checkpoint), not both."
        )
    if given["checkpoint"] is not None and given["model_config"] is None:
        raise ConfigurationError(
            "--checkpoint is the weights of --model-config; a model-zoo model's weights are found in "
            "--pretrained-dir (vfx-download-models fetches them)."
        )
    return Recipe(**{name: value for name, value in given.items() if value is not None})


def minus_one_or_positive(maximum: int | None) -> Callable[[click.Context, click.Parameter, int], int]:
    """A callback accepting -1 ("all", "no limit") or a number from 1 to ``maximum``."""

    def check(ctx: click.Context, param: click.Parameter, value: int) -> int:
        if value != -1 and (value < 1 or (maximum is not None and value > maximum)):
            most = f" up to {maximum}" if maximum is not None else ""
            raise click.BadParameter(
                f"{value} is not allowed; use -1 (no limit / all) or a number >= 1{most}."
            )
        return value

    return check


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
    return setting_option("--broker_url", "--broker-url", field="broker_url", group=group, help=help)


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
    return setting_option(
        "--pretrained_dir", "--pretrained-dir", field="pretrained_dir", group=group,
        type=click.Path(file_okay=False), help=help,
    )


def device_option(*, help: str, group: str | None = None) -> Callable[[F], F]:
    """``--device``: one of :data:`DEVICES` (``VFX_DEVICE`` may also say ``cuda:N``)."""
    return setting_option("--device", field="device", group=group, type=click.Choice(DEVICES), help=help)


def concurrency_option(*, help: str, group: str | None = None) -> Callable[[F], F]:
    """``--concurrency`` / ``-c``: videos a worker processes at once (default: chosen by the worker)."""
    return option("--concurrency", "-c", group=group, type=click.IntRange(min=1), default=None, help=help)


def pool_option(*, help: str, group: str | None = None) -> Callable[[F], F]:
    """``--pool``: one of :data:`POOLS` (default: chosen by the worker)."""
    return option("--pool", group=group, type=click.Choice(POOLS), default=None, help=help)


def keep_downloads_option(*, help: str, group: str | None = None) -> Callable[[F], F]:
    """``--keep-downloads/--no-keep-downloads``: keep the videos fetched from the Hub, or not."""
    # default None, not False: given neither as flag nor as variable, the settings' default holds.
    return setting_option(
        "--keep-downloads/--no-keep-downloads", field="keep_downloads", group=group, help=help
    )


#: Words that mark an option's value as a secret: such values never go on a command line, where
#: every user of the machine can read them (``ps``, /proc/<pid>/cmdline).
_SECRET_WORDS = ("secret", "token", "password", "credential", "private_key")


def _no_secrets(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a ``--storage-options`` object with a secret in it, at any depth."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as e:
        raise click.BadParameter(f"not JSON ({e}); give an object, e.g. '{{\"endpoint_url\": \"...\"}}'.") \
            from None
    stack, found = [parsed], []
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            found += [str(key) for key in node if any(word in str(key).lower() for word in _SECRET_WORDS)]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    if found:
        raise click.BadParameter(
            f"{', '.join(sorted(found))} would put a secret on the command line, where any user of this "
            "machine can read it. Set it in VFX_STORAGE_OPTIONS or the store's own variables "
            "(AWS_SECRET_ACCESS_KEY, AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS) instead."
        )
    return value


def storage_options_option(*, group: str | None = None) -> Callable[[F], F]:
    """``--storage-options``: the object-storage client's options as JSON, secrets refused."""
    return setting_option(
        "--storage-options", field="storage_options", group=group, callback=_no_secrets, metavar="JSON",
        # One line in --help (vfx-enqueue's fits two screens); docs/many-machines.md says the rest.
        help="S3/GCS options.",
    )
