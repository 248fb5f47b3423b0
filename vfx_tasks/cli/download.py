"""``vfx-download-models``: fetch the official checkpoints into the pretrained directory.

Any model of mmaction2's model zoo, from the URL its metafile gives; without names, the two
default models. ``--list`` prints what ``vfx-models`` prints instead of downloading.

Exit codes: 0 every checkpoint present and verified, 1 a download failed (unreachable server,
broken transfer, wrong hash), 2 usage error (unknown model name, a model that cannot run here,
bad option).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import TracebackType

import click
from tqdm import tqdm

from vfx_tasks.cli import EXIT_FAILED, EXIT_OK
from vfx_tasks.cli._help import GroupedCommand
from vfx_tasks.cli.errors import cli_error
from vfx_tasks.cli.models import list_models
from vfx_tasks.cli.options import CONTEXT_SETTINGS, option, pretrained_dir_option, version_option
from vfx_tasks.errors import CheckpointDownloadError, VfxError
from vfx_tasks.models import MODEL_SPECS, ModelSpec, get_model_spec
from vfx_tasks.models.download import DEFAULT_TIMEOUT_SECONDS, checkpoint_url, download_checkpoint
from vfx_tasks.redaction import redact
from vfx_tasks.settings import Settings

logger = logging.getLogger(__name__)

EPILOG = """\b
Examples:
  vfx-download-models                      # the two default models (i3d, swin-t)
  vfx-download-models i3d x3d-s tsm        # by full name or alias, any model-zoo model
  vfx-download-models --list               # every model, its size and whether it is here
  vfx-download-models --pretrained-dir /models swin-t
  vfx-download-models --base-url http://mirror.local/ckpt i3d
                                           # <base-url>/<official file name>
"""


class _DownloadProgress:
    """A tqdm bar on stderr for one file, opened at the first bytes (a file already present shows none)."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._bar: tqdm[None] | None = None

    def __call__(self, bytes_done: int, bytes_total: int | None) -> None:
        if self._bar is None:
            # Without a size (no Content-Length) tqdm counts bytes and shows no percentage.
            self._bar = tqdm(total=bytes_total, desc=self._label, unit="B", unit_scale=True, file=sys.stderr)
        # A resumed transfer starts part-way; a restarted one (no Range support) never moves back.
        if bytes_done > self._bar.n:
            self._bar.update(bytes_done - self._bar.n)

    def __enter__(self) -> _DownloadProgress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()


def _resolve_models(ctx: click.Context, param: click.Parameter, names: tuple[str, ...]) -> list[ModelSpec]:
    if not names:
        return list(MODEL_SPECS.values())
    specs: list[ModelSpec] = []
    for name in names:
        try:
            spec = get_model_spec(name)
        except VfxError as e:  # unknown, or a model that cannot run here (its reason)
            raise click.BadParameter(str(e), ctx=ctx, param=param) from None
        if spec not in specs:
            specs.append(spec)
    return specs


def _where_to_put_them(specs: list[ModelSpec], pretrained_dir: Path, base_url: str | None) -> str:
    lines = [f"Download these files by other means and put them in {pretrained_dir}:"]
    for spec in specs:
        lines.append(f"  {checkpoint_url(spec, base_url=base_url)}")
        lines.append(f"    -> {pretrained_dir / spec.checkpoint_filename}")
    lines.append("or point --pretrained-dir / VFX_PRETRAINED_DIR at a folder that already holds them.")
    return "\n".join(lines)


def _download(
    spec: ModelSpec, target: Path, *, base_url: str | None, timeout_seconds: float
) -> VfxError | None:
    """Fetch one checkpoint and say so on stdout; the error, if it failed (reported by the caller)."""
    # The bar is closed before anything else is printed, so that a message starts on a line of its own.
    with _DownloadProgress(spec.checkpoint_filename) as progress:
        try:
            result = download_checkpoint(
                spec, target, base_url=base_url, progress=progress, timeout_seconds=timeout_seconds
            )
        except VfxError as e:
            return e
    verb = "already present" if result.status == "present" else "downloaded"
    click.echo(f"{result.path}: {verb}, verified")
    return None


@click.command("vfx-download-models", cls=GroupedCommand, context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.argument("models", nargs=-1, metavar="[NAME]...", callback=_resolve_models)
@pretrained_dir_option(help="Where the workers read checkpoints.")
@option(
    "--base-url",
    "--base_url",
    help="Fetch <base-url>/<official file name> instead of the official URLs (a mirror).",
)
@option(
    "--timeout-seconds",
    type=click.FloatRange(min=1),
    default=DEFAULT_TIMEOUT_SECONDS,
    help="Network timeout per read.",
)
@option(
    "--list",
    "list_only",
    is_flag=True,
    help="List every model (family, feature size, input, checkpoint size, on disk) instead.",
)
@version_option("vfx-download-models")
@click.pass_context
def main(
    ctx: click.Context,
    *,
    models: list[ModelSpec],
    pretrained_dir: str | None,
    base_url: str | None,
    timeout_seconds: float,
    list_only: bool,
) -> None:
    """Download the official checkpoints of NAME (default: the two default models), verified.

    NAME is any model of mmaction2's model zoo (`vfx-models` lists them). Resumes broken
    transfers, skips files already present and valid, and never leaves a partial file under the
    final name.
    """
    if list_only:
        list_models(pretrained_dir, None)
        ctx.exit(EXIT_OK)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        target = Settings.from_env(pretrained_dir=pretrained_dir).pretrained_dir
    except VfxError as e:
        raise cli_error(e) from e
    failed: list[ModelSpec] = []
    unreachable: list[ModelSpec] = []
    for spec in models:
        error = _download(spec, target, base_url=base_url, timeout_seconds=timeout_seconds)
        if error is None:
            continue
        # Reported and not raised: the other models are still worth fetching.
        click.echo(redact(f"Error: {spec.name}: {error}"), err=True)
        failed.append(spec)
        if isinstance(error, CheckpointDownloadError):
            unreachable.append(spec)
    if unreachable:
        # A mirror URL may carry a password: the user has it, the terminal log need not.
        click.echo(redact(_where_to_put_them(unreachable, target, base_url)), err=True)
    ctx.exit(EXIT_FAILED if failed else EXIT_OK)


if __name__ == "__main__":
    main()
