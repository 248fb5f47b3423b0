"""``vfx-models``: the models ``--model`` accepts, what each gives, and whether its weights are here.

One row per model of mmaction2's model zoo (the two seed models first): its name and short
aliases, family, feature size ``D``, the input shape of one clip-crop, the checkpoint's size (on
disk, or about 4 bytes per parameter the metafile counts) and whether it is in the pretrained
folder. A model that cannot run here (TIN, MobileOne-TSM, TSN's borrowed backbones) says why.
``vfx-download-models --list`` prints the same table.

Exit codes: 0 listed, 2 usage error (an unknown family).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from vfx_tasks.cli import EXIT_OK
from vfx_tasks.cli._help import GroupedCommand
from vfx_tasks.cli.errors import cli_error
from vfx_tasks.cli.options import CONTEXT_SETTINGS, option, pretrained_dir_option, version_option
from vfx_tasks.errors import VfxError
from vfx_tasks.models import MODEL_SPECS, ModelSpec, get_model_spec, zoo_entries, zoo_families
from vfx_tasks.settings import Settings

HEADER = ("NAME", "ALIASES", "FAMILY", "D", "INPUT", "CHECKPOINT", "ON DISK")


@dataclass(frozen=True)
class ModelRow:
    """One model as listed: what ``--model`` takes and what it gives."""

    name: str
    aliases: str
    family: str
    feature_dim: str
    input_shape: str
    checkpoint_size: str
    on_disk: str
    note: str = ""

    def cells(self) -> tuple[str, ...]:
        return (self.name, self.aliases, self.family, self.feature_dim, self.input_shape,
                self.checkpoint_size, self.on_disk)


def _size(num_bytes: int, *, approximate: bool) -> str:
    return f"{'~' if approximate else ''}{num_bytes / 1e6:.0f} MB"


def _row(name: str, pretrained_dir: Path) -> ModelRow:
    entry = zoo_entries().get(name)
    estimate = entry.approx_checkpoint_bytes if entry else None
    approximate = _size(estimate, approximate=True) if estimate else "?"
    try:
        spec: ModelSpec = get_model_spec(name)
    except VfxError as e:  # listed all the same: the reason is the useful part
        family = entry.family if entry else "?"
        return ModelRow(name, "", family, "-", "-", approximate, "-", note=str(e))
    path = Path(spec.checkpoint_file) if spec.checkpoint_file else pretrained_dir / spec.checkpoint_filename
    present = path.is_file()
    shape = "x".join(map(str, spec.input_shape))
    return ModelRow(
        name=spec.name,
        aliases=", ".join(spec.aliases),
        family=spec.family,
        feature_dim=str(spec.feature_dim),
        input_shape=f"{shape} {spec.input_format}",
        checkpoint_size=_size(path.stat().st_size, approximate=False) if present else approximate,
        on_disk="yes" if present else "no",
    )


def model_rows(pretrained_dir: Path, *, family: str | None = None) -> list[ModelRow]:
    """Every model ``--model`` accepts (the seeds first), optionally one family's only.

    Reads each model's config (about 1 s for the whole zoo); names alone are listed by
    :func:`vfx_tasks.models.model_names` without reading any.
    """
    names = list(MODEL_SPECS) + [name for name in zoo_entries() if name not in MODEL_SPECS]
    rows = [_row(name, pretrained_dir) for name in names]
    return [row for row in rows if family is None or row.family == family]


def render_table(rows: list[ModelRow]) -> str:
    """The rows as aligned columns; the models that cannot run, with their reasons, below."""
    table = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
             for cells in table]
    unavailable = [row for row in rows if row.note]
    if unavailable:
        lines += ["", "Not available here:"] + [f"  {row.name}: {row.note}" for row in unavailable]
    return "\n".join(lines)


def list_models(pretrained_dir: str | None, family: str | None) -> None:
    """Print the table for ``vfx-models`` and ``vfx-download-models --list``."""
    try:
        target = Settings.from_env(pretrained_dir=pretrained_dir).pretrained_dir
    except VfxError as e:
        raise cli_error(e) from e
    click.echo(render_table(model_rows(target, family=family)))


def _check_family(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and value not in zoo_families():
        families = ", ".join(zoo_families())
        raise click.BadParameter(f"Unknown family ({value!r}). Supported values are {families}.", ctx=ctx,
                                 param=param)
    return value


@click.command("vfx-models", cls=GroupedCommand, context_settings=CONTEXT_SETTINGS)
@option("--family", callback=_check_family, help="Only this model-zoo family (i3d, tsm, videomae...).")
@pretrained_dir_option(help="Where the checkpoints are looked for.")
@version_option("vfx-models")
@click.pass_context
def main(ctx: click.Context, *, family: str | None, pretrained_dir: str | None) -> None:
    """List the models --model accepts: family, feature size, input shape, checkpoint size, on disk."""
    list_models(pretrained_dir, family)
    ctx.exit(EXIT_OK)


if __name__ == "__main__":
    main()
