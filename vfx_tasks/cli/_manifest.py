"""``vfx-enqueue``'s first step: the output folder's manifest must describe this run (or ``--force``)."""

from __future__ import annotations

import click

from vfx_tasks.outputs.manifest import MANIFEST_NAME, claim_output_dir, manifest_for
from vfx_tasks.queue.job import Run
from vfx_tasks.settings import Settings


def claim_output_dir_for_run(run: Run, settings: Settings, *, force: bool, dry_run: bool) -> None:
    """Check (and, unless ``dry_run``, write) ``<output_dir>/vfx-run.json`` before anything is queued.

    Raises:
        ManifestMismatchError: the folder records other settings and ``force`` is off (exit 2).
    """
    manifest = manifest_for(run.recipe, pretrained_dir=settings.pretrained_dir)
    outcome = claim_output_dir(run.output_dir, manifest, force=force, dry_run=dry_run)
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
