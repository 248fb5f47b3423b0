"""``vfx-download-models``: fetch the official checkpoints into the pretrained directory.

    vfx-download-models                      # every supported model
    vfx-download-models i3d                  # one model, by full name or alias
    vfx-download-models --pretrained-dir /models swin-t
    vfx-download-models --base-url http://mirror.local/ckpt i3d   # <base-url>/<official file name>

Exit codes: 0 every checkpoint present and verified, 1 a download failed (unreachable server,
broken transfer, wrong hash), 2 usage error (unknown model name, bad option).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from vfx_tasks.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from vfx_tasks.errors import CheckpointDownloadError, ConfigurationError, VfxError
from vfx_tasks.models import MODEL_SPECS, ModelSpec, get_model_spec
from vfx_tasks.models.download import DEFAULT_TIMEOUT_SECONDS, checkpoint_url, download_checkpoint
from vfx_tasks.settings import Settings

logger = logging.getLogger(__name__)


class _ProgressBar:
    """A click progress bar on stderr for one file, opened when the file's size is first known."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._bar: Any = None  # click's ProgressBar class is private
        self._started = False
        self._shown_bytes = 0

    def __call__(self, bytes_done: int, bytes_total: int | None) -> None:
        if not self._started:
            self._started = True
            if bytes_total is None:
                click.echo(f"{self._label}: size unknown, downloading...", err=True)
            else:
                self._bar = click.progressbar(length=bytes_total, label=self._label, file=sys.stderr)
                self._bar.__enter__()
        # A resumed transfer starts part-way; a restarted one (no Range support) never moves back.
        if self._bar is not None and bytes_done > self._shown_bytes:
            self._bar.update(bytes_done - self._shown_bytes)
            self._shown_bytes = bytes_done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _resolve_models(names: tuple[str, ...]) -> list[ModelSpec]:
    if not names:
        return list(MODEL_SPECS.values())
    specs: list[ModelSpec] = []
    for name in names:
        try:
            spec = get_model_spec(name)
        except ConfigurationError as e:
            raise click.BadParameter(str(e), param_hint="NAME") from None
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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--pretrained-dir", "--pretrained_dir", envvar="VFX_PRETRAINED_DIR",
              type=click.Path(file_okay=False), help="Where the workers read checkpoints.")
@click.option("--base-url", "--base_url", envvar="VFX_MODELS_BASE_URL",
              help="Fetch <base-url>/<official file name> instead of the official URLs (a mirror).")
@click.option("--timeout-seconds", envvar="VFX_DOWNLOAD_TIMEOUT_SECONDS", type=click.FloatRange(min=1),
              default=DEFAULT_TIMEOUT_SECONDS, show_default=True, help="Network timeout per read.")
def main(
    names: tuple[str, ...], pretrained_dir: str | None, base_url: str | None, timeout_seconds: float
) -> None:
    """Download the official Kinetics-400 checkpoints of NAME (default: every model), verified.

    Resumes broken transfers, skips files already present and valid, and never leaves a partial
    file under the final name.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    specs = _resolve_models(names)
    try:
        settings = Settings.from_env(pretrained_dir=pretrained_dir)
    except VfxError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    target = settings.pretrained_dir

    unreachable: list[ModelSpec] = []
    failed = False
    for spec in specs:
        bar = _ProgressBar(spec.checkpoint_filename)
        try:
            result = download_checkpoint(
                spec, target, base_url=base_url, progress=bar, timeout_seconds=timeout_seconds
            )
        except VfxError as e:
            bar.close()  # before the message, so that it starts on a line of its own
            click.echo(f"Error: {spec.name}: {e}", err=True)
            failed = True
            if isinstance(e, CheckpointDownloadError):
                unreachable.append(spec)
            continue
        bar.close()
        verb = "already present" if result.status == "present" else "downloaded"
        click.echo(f"{result.path}: {verb}, verified")
    if unreachable:
        click.echo(_where_to_put_them(unreachable, target, base_url), err=True)
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


if __name__ == "__main__":
    main()
