"""``vfx-export SOURCE DEST``: a finished output folder in the layout a downstream codebase reads.

Nothing is recomputed; see :mod:`vfx_tasks.outputs.export` for the layouts and how an interrupted
export resumes.
"""

from __future__ import annotations

import click

from vfx_tasks.cli._help import GroupedCommand
from vfx_tasks.cli.errors import cli_error
from vfx_tasks.cli.options import CONTEXT_SETTINGS, option, storage_options_option, version_option
from vfx_tasks.errors import VfxError
from vfx_tasks.outputs.export import LAYOUTS, SPLITS, Layout, Split, export_folder, write_list
from vfx_tasks.outputs.export_hdf5 import COMPRESSIONS, Compression, export_hdf5
from vfx_tasks.settings import Settings
from vfx_tasks.storage import is_url

EPILOG = """\b
Examples:
  vfx-export features/xd_i3d exported/xd_i3d --layout per-crop --split test --list lists/xd_test.list
  vfx-export features/i3d subset/ --layout video --split train
  vfx-export features/i3d features_i3d.h5 --format hdf5 --list lists/all.list
  vfx-export s3://bucket/features/i3d exported/ --layout per-crop
  vfx-export features/i3d s3://bucket/exports/i3d --layout video
"""


def _folder_or_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """SOURCE: an existing local folder, or a URL (whose listing says later whether it exists)."""
    if is_url(value):
        return value
    return click.Path(exists=True, file_okay=False).convert(value, param, ctx)  # type: ignore[no-any-return]


@click.command("vfx-export", cls=GroupedCommand, context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.argument("source", callback=_folder_or_url)
@click.argument("dest", type=click.Path())
@option(
    "--layout",
    group="Layout",
    type=click.Choice(LAYOUTS),
    default="per-crop",
    help="per-crop: <id>__<k>.npy (clips, D) per crop, as RTFM reads; video: (clips, crops, D) per video.",
)
@option(
    # Parameters named format and list, so that their variables are VFX_FORMAT and VFX_LIST.
    "--format",
    "format",
    group="Layout",
    type=click.Choice(("npy", "hdf5")),
    default="npy",
    help="npy: DEST is a folder; hdf5: DEST is one .h5 file, a dataset per video (or crop).",
)
@option(
    "--compression",
    group="Layout",
    type=click.Choice(COMPRESSIONS),
    default="gzip",
    help="With --format hdf5 (gzip is readable everywhere; lzf only through h5py).",
)
@option(
    "--split",
    group="Selection",
    type=click.Choice(SPLITS),
    default="all",
    help="Only the videos of this split (where the labels beside the features name one).",
)
@option(
    "--list",
    "list",
    group="Selection",
    type=click.Path(dir_okay=False),
    help="Write the exported paths (HDF5: dataset names) to this file, one per line, sorted.",
)
@storage_options_option(group="Selection")
@version_option("vfx-export")
def main(
    *,
    source: str,
    dest: str,
    layout: Layout,
    format: str,
    compression: Compression,
    split: Split,
    list: str | None,
    storage_options: str | None,
) -> None:
    """Export the features of the output folder SOURCE into DEST without recomputing them.

    Either may be in object storage (s3://bucket/prefix, gs://...), except an HDF5 DEST.
    """
    list_file = list
    try:
        options = Settings.from_env(storage_options=storage_options).storage_kwargs()
        if format == "hdf5":
            report = export_hdf5(
                source, dest, layout=layout, split=split, compression=compression, storage_options=options
            )
        else:
            report = export_folder(source, dest, layout=layout, split=split, storage_options=options)
        if list_file is not None:
            write_list(list_file, report.entries)
    except VfxError as e:
        raise cli_error(e) from e
    rate = report.bytes_written / 1e6 / report.seconds if report.seconds else 0.0
    click.echo(
        f"Exported {report.videos} videos to {dest}: {report.written} written, {report.up_to_date} "
        f"up to date, in {report.seconds:.1f} s ({rate:.0f} MB/s)"
        + (f"; list in {list_file}" if list_file else "")
        + ".",
        err=True,
    )


if __name__ == "__main__":
    main()
