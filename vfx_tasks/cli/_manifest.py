"""``vfx-enqueue``'s first step: the output folder's manifest must describe this run (or ``--force``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from vfx_tasks.outputs.manifest import MANIFEST_NAME, claim_output_dir, manifest_for
from vfx_tasks.queue.job import Run
from vfx_tasks.settings import Settings
from vfx_tasks.storage import FolderLike, is_url, open_folder


def claim_output_dir_for_run(run: Run, settings: Settings, *, force: bool, dry_run: bool) -> None:
    """Check (and, unless ``dry_run``, write) ``<output_dir>/vfx-run.json`` before anything is queued.

    Raises:
        ManifestMismatchError: the folder records other settings and ``force`` is off (exit 2).
        StorageAccessError: an output bucket that does not exist or refuses these credentials (exit 2).
    """
    manifest = manifest_for(run.recipe, pretrained_dir=settings.pretrained_dir)
    with output_folder(run.output_dir, settings) as folder:
        outcome = claim_output_dir(folder, manifest, force=force, dry_run=dry_run)
    if outcome == "replaced":
        click.echo(
            f"--force: replaced {MANIFEST_NAME} of {run.output_dir}; every video is recomputed.", err=True
        )
    elif outcome == "adopted":
        click.echo(
            f"Warning: {run.output_dir} has features but no {MANIFEST_NAME} (made before manifests); "
            "resuming them as this run's and recording its settings.",
            err=True,
        )


@contextlib.contextmanager
def output_folder(output_dir: str, settings: Settings) -> Iterator[FolderLike]:
    """A URL's folder opened with the storage options of ``settings``; a local path as it is (its
    readers open it, or find nothing when it is not there yet)."""
    if not is_url(output_dir):
        yield output_dir
        return
    with open_folder(output_dir, storage_options=settings.storage_kwargs()) as folder:
        yield folder
