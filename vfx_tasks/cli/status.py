"""``vfx-status``: queued / running / done / failed videos of an output root (and model), with
reasons, and the videos no live worker holds (stranded), so that a wait that cannot end shows.

It also says how many task messages workers refused on this Redis (malformed, untrusted, naming a
run they do not belong to, or another task than ``vfx.extract_video``), with the last few and their
reasons: such messages are filed apart from every run (see :mod:`vfx_tasks.queue.ledger`), since
the run or video they name may not be theirs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from vfx_tasks.cli._help import GroupedCommand
from vfx_tasks.cli._manifest import output_folder
from vfx_tasks.cli._output_folder import echo_output_folder, output_folder_status
from vfx_tasks.cli.errors import cli_error
from vfx_tasks.cli.options import (
    CONTEXT_SETTINGS,
    broker_url_option,
    model_option,
    option,
    output_dir_option,
    storage_options_option,
    version_option,
)
from vfx_tasks.errors import VfxError
from vfx_tasks.queue.app import create_app
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.recovery.holders import Holders
from vfx_tasks.queue.recovery.stranded import StrandedVideo, stranded_videos
from vfx_tasks.redaction import redact
from vfx_tasks.settings import Settings
from vfx_tasks.storage import is_url, normalize_url

EPILOG = """\b
Examples:
  vfx-status --output_dir features/i3d
  vfx-status --output_dir features/i3d --model swin-t
  vfx-status --output_dir features/i3d --json | jq .totals
  vfx-status --output_dir features/i3d --write-index
  vfx-status --broker-url redis://head:6379/0 --output_dir /data/features
  vfx-status --output_dir s3://bucket/features/i3d --write-index
"""


#: Refused messages shown: the last few in the text, more in the JSON.
SHOWN_REFUSALS_TEXT = 5
SHOWN_REFUSALS_JSON = 50


def collect_status(
    ledger: Ledger, output_dir: str, model: str | None, *, find_stranded: Callable[[str], list[StrandedVideo]]
) -> dict[str, Any]:
    """Counts, failures and stranded videos (``find_stranded(run_id)``) of every run writing to
    ``output_dir`` (with ``model``, if given), and the messages workers refused."""
    if is_url(output_dir):
        root = normalize_url(output_dir, what="--output_dir")
    else:
        root = str(Path(output_dir).expanduser().resolve())
    runs = [r for r in ledger.runs() if r.get("output_dir") == root and model in (None, r.get("model"))]
    totals = {"queued": 0, "running": 0, "done": 0, "failed": 0, "stranded": 0}
    described = []
    for run in runs:
        counts = ledger.counts(run["run_id"])
        failed = ledger.entries(run["run_id"], "failed")
        stranded = [asdict(video) for video in find_stranded(run["run_id"])]
        for key in ("queued", "running", "done", "failed"):
            totals[key] += getattr(counts, key)
        totals["stranded"] += len(stranded)
        described.append({**run, "counts": vars(counts), "failed": failed, "stranded": stranded})
    refused, last = ledger.refusals(SHOWN_REFUSALS_JSON)
    return {
        "output_dir": root, "model": model, "totals": totals, "runs": described,
        "refused": {"count": refused, "last": last},
    }


def _echo_text(status: dict[str, Any]) -> None:
    if not status["runs"]:
        model = status["model"]
        click.echo(f"No runs recorded for {status['output_dir']}" + (f" and {model}" if model else "") + ".")
    for run in status["runs"]:
        counts = run["counts"]
        click.echo(
            f"{run['model']} | {run['crop_type']}, clips={run['num_clips_per_video']}, "
            f"{run['clip_sampling']}, {run['precision']} (run {run['run_id']})\n"
            f"  queued {counts['queued']}, running {counts['running']}, done {counts['done']}, "
            f"failed {counts['failed']}"
        )
        for relative_id, reason in sorted(run["failed"].items()):
            # Reasons come from Redis, written by any worker: secrets in them are masked here too.
            click.echo(redact(f"  FAILED {relative_id}: [{reason.get('code')}] {reason.get('message')}"))
        if run["stranded"]:
            click.echo(f"  stranded {len(run['stranded'])}: held by no live worker")
        for video in run["stranded"]:
            click.echo(redact(f"  STRANDED {video['relative_id']} ({video['state']}): {video['detail']}"))
    _echo_refused(status["refused"])


def _echo_refused(refused: dict[str, Any]) -> None:
    if not refused["count"]:
        return
    shown = refused["last"][:SHOWN_REFUSALS_TEXT]
    click.echo(f"Refused task messages on this Redis: {refused['count']} in all (filed under no run); "
               f"the last {len(shown)}:")
    for entry in shown:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(entry.get("at") or 0)))
        claimed = f" claiming {str(entry.get('relative_id'))[:80]!r}" if entry.get("relative_id") else ""
        line = f"  {when} task {entry.get('task_id')}{claimed}: [{entry.get('code')}] {entry.get('message')}"
        click.echo(redact(line[:1000]))


def _echo_json(status: dict[str, Any]) -> None:
    click.echo(redact(json.dumps(status, indent=2, sort_keys=True)))


@click.command("vfx-status", cls=GroupedCommand, context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@output_dir_option(help="Output root given to vfx-enqueue.")
@model_option(default=None, help="Only runs of this model.")
@broker_url_option()
# The parameter is named json so that its variable is VFX_JSON, as for every other option.
@option("--json", "json", is_flag=True, help="Print one JSON object (for scripts).")
@option("--write-index", "--write_index", is_flag=True, help="Rebuild <output_dir>/index.csv from the files.")
@storage_options_option()
@version_option("vfx-status")
def main(
    *,
    output_dir: str,
    model: str | None,
    broker_url: str | None,
    json: bool,
    write_index: bool,
    storage_options: str | None,
) -> None:
    """Show how far the runs writing to an output folder are."""
    try:
        settings = Settings.from_env(broker_url=broker_url, storage_options=storage_options)
        ledger, holders = Ledger.from_url(settings.broker_url), Holders.from_url(settings.broker_url)
        app = create_app(settings, producer_only=True)

        def find_stranded(run_id: str) -> list[StrandedVideo]:
            return stranded_videos(app, ledger, holders, run_id, queue=settings.queue_name)

        status = collect_status(ledger, output_dir, model, find_stranded=find_stranded)
        with output_folder(status["output_dir"], settings) as folder:
            status["outputs"] = output_folder_status(ledger, folder, status["runs"], write_index=write_index)
    except VfxError as e:
        raise cli_error(e) from e
    (_echo_json if json else _echo_text)(status)
    if not json:
        echo_output_folder(status["outputs"])


if __name__ == "__main__":
    main()
