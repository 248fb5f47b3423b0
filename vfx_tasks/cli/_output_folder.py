"""``vfx-status``'s view of the output folder itself: its manifest, its files per folder, its index."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import click

from vfx_tasks.outputs.folder import iter_feature_files
from vfx_tasks.outputs.index import IndexRow, read_index, rebuild_index
from vfx_tasks.outputs.manifest import MANIFEST_NAME, Manifest, read_manifest
from vfx_tasks.queue.ledger import Ledger, State
from vfx_tasks.storage import FolderLike, is_open_folder

#: Folders listed by the text output (all of them are in ``--json``).
_FOLDERS_SHOWN = 20


def output_folder_status(
    ledger: Ledger, output_dir: FolderLike, runs: list[dict[str, Any]], *, write_index: bool
) -> dict[str, Any]:
    """The manifest's settings, feature files per folder, index rows; the index rebuilt if asked.

    ``runs`` are the ledger's runs writing there, whose done summaries give frames and fps.
    """
    manifest = read_manifest(output_dir)
    per_folder = Counter(
        relative_id.rpartition("/")[0] or "." for relative_id in iter_feature_files(output_dir)
    )
    described: dict[str, Any] = {
        "manifest": None if manifest is None else manifest.to_json(),
        "feature_files": sum(per_folder.values()),
        "feature_files_per_folder": dict(sorted(per_folder.items())),
    }
    if write_index:
        if manifest is None:
            shown = output_dir.path if is_open_folder(output_dir) else Path(output_dir)  # type: ignore[union-attr]
            raise click.UsageError(f"--write-index needs {shown / MANIFEST_NAME}; it has none.")
        write_index_from_ledger(ledger, output_dir, manifest, [run["run_id"] for run in runs])
    described["index_rows"] = len(read_index(output_dir))
    return described


def write_index_from_ledger(
    ledger: Ledger, output_dir: FolderLike, manifest: Manifest, run_ids: list[str]
) -> list[IndexRow]:
    """Rebuild the folder's ``index.csv`` from its files and the done summaries of ``run_ids``."""
    summaries: dict[str, Any] = {}
    for run_id in run_ids:
        summaries.update(ledger.entries(run_id, State.DONE))
    recipe, facts = manifest.settings.recipe, manifest.settings.facts
    return rebuild_index(
        output_dir,
        summaries=summaries,
        sampler=facts.frame_sampler(),
        num_clips_per_video=recipe.num_clips_per_video,
        clip_sampling=recipe.clip_sampling,
        feature_shape=(len(facts.crop_order), facts.feature_dim),
    )


def echo_output_folder(described: dict[str, Any]) -> None:
    """The text form of :func:`output_folder_status`."""
    manifest = described["manifest"]
    if manifest is None:
        click.echo(f"No {MANIFEST_NAME}: how these features were made is not recorded.")
    else:
        s = manifest["settings"]
        sha = (s["checkpoint_sha256"] or "not hashed")[:12]
        crops = "/".join(s["crop_order"])
        click.echo(
            f"{MANIFEST_NAME}: {s['model']} (checkpoint {sha}), {s['crop_type']} {crops}, "
            f"clips={s['num_clips_per_video']} {s['clip_sampling']}, {s['precision']}, {s['decoder']}, "
            f"created {manifest['created']}"
        )
    per_folder = described["feature_files_per_folder"]
    click.echo(f"{described['feature_files']} feature files, {described['index_rows']} index rows")
    for folder, count in list(per_folder.items())[:_FOLDERS_SHOWN]:
        click.echo(f"  {folder}: {count}")
    if len(per_folder) > _FOLDERS_SHOWN:
        click.echo(f"  ... and {len(per_folder) - _FOLDERS_SHOWN} more folders (see --json)")
