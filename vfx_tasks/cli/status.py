"""``vfx-status``: queued / running / done / failed videos of an output root (and model), with reasons.

vfx-status --output_dir features/i3d
vfx-status --output_dir features/i3d --model swin-t --json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from vfx_tasks.cli import EXIT_OK, EXIT_UNAVAILABLE
from vfx_tasks.errors import ConfigurationError, VfxError
from vfx_tasks.models import get_model_spec
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.settings import Settings


def _validate_model(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return get_model_spec(value).name
    except ConfigurationError as e:
        raise click.BadParameter(str(e)) from None


def collect_status(ledger: Ledger, output_dir: str, model: str | None) -> dict[str, Any]:
    """Counts and failures of every run writing to ``output_dir`` (with ``model``, if given)."""
    root = str(Path(output_dir).expanduser().resolve())
    runs = [r for r in ledger.runs() if r.get("output_dir") == root and model in (None, r.get("model"))]
    totals = {"queued": 0, "running": 0, "done": 0, "failed": 0}
    described = []
    for run in runs:
        counts = ledger.counts(run["run_id"])
        failed = ledger.entries(run["run_id"], "failed")
        for key in totals:
            totals[key] += getattr(counts, key)
        described.append({**run, "counts": vars(counts), "failed": failed})
    return {"output_dir": root, "model": model, "totals": totals, "runs": described}


# fmt: off
@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--output_dir", "--output-dir", envvar="VFX_OUTPUT_DIR", type=click.Path(file_okay=False),
              default="./data/outputs/feature/", show_default=True, help="Output root given to vfx-enqueue.")
@click.option("--model", envvar="VFX_MODEL", callback=_validate_model, help="Only runs of this model.")
@click.option("--broker_url", "--broker-url", envvar="VFX_BROKER_URL", help="Redis URL of the queue.")
@click.option("--json", "as_json", envvar="VFX_STATUS_JSON", is_flag=True,
              help="Print one JSON object (for scripts).")
# fmt: on
def main(output_dir: str, model: str | None, broker_url: str | None, as_json: bool) -> None:
    """Show how far the runs writing to an output folder are."""
    try:
        settings = Settings.from_env(broker_url=broker_url)
        status = collect_status(Ledger.from_url(settings.broker_url), output_dir, model)
    except VfxError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    if as_json:
        click.echo(json.dumps(status, indent=2, sort_keys=True))
        sys.exit(EXIT_OK)
    if not status["runs"]:
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
            click.echo(f"  FAILED {relative_id}: [{reason.get('code')}] {reason.get('message')}")
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
