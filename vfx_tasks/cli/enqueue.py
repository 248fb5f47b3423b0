"""``vfx-enqueue``: queue every video of a folder that is not done yet; optionally wait, or run locally.

Takes every argument of the original ``video-feature-extractor`` under its name (``--input_dir``)
and with hyphens (``--input-dir``). The run itself is :mod:`vfx_tasks.cli._plan_and_wait`, and
with ``--local`` :mod:`vfx_tasks.cli._local`.
"""

from __future__ import annotations

from typing import Any

import click

from vfx_tasks.cli import EXIT_INTERRUPTED
from vfx_tasks.cli._help import GroupedCommand
from vfx_tasks.cli._local import run_locally
from vfx_tasks.cli._plan_and_wait import EnqueueRequest, enqueue_and_maybe_wait
from vfx_tasks.cli._video_source import check_arguments, make_source
from vfx_tasks.cli.errors import cli_error
from vfx_tasks.cli.options import (
    CONTEXT_SETTINGS,
    broker_url_option,
    concurrency_option,
    device_option,
    keep_downloads_option,
    minus_one_or_positive,
    option,
    output_dir_option,
    pool_option,
    pretrained_dir_option,
    recipe_from,
    recipe_options,
    storage_options_option,
    version_option,
)
from vfx_tasks.errors import VfxError
from vfx_tasks.queue.job import Run
from vfx_tasks.settings import Settings
from vfx_tasks.sources.hub_dataset import SPLITS, Split

EPILOG = """\b
Examples:
  vfx-enqueue --input_dir videos/ --output_dir features/i3d [--wait]
  vfx-enqueue --input_dir s3://bkt/videos --output_dir s3://bkt/features --wait
  vfx-enqueue --input_dir videos/ --output_dir features/i3d --local
  vfx-enqueue --hf_dataset jherng/xd-violence --split test --wait
  vfx-enqueue --input_dir videos/ --model x3d --dry-run
"""


@click.command("vfx-enqueue", cls=GroupedCommand, context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@option(
    "--input_dir",
    "--input-dir",
    group="Input",
    type=click.Path(file_okay=False),
    help="Folder (or s3://...) of videos, searched recursively.",
)
@option(
    "--hf_dataset",
    "--hf-dataset",
    group="Input",
    help="Hugging Face dataset, e.g. jherng/xd-violence; workers fetch each video.",
)
@option(
    "--split",
    group="Input",
    type=click.Choice(SPLITS),
    default="all",
    help="With --hf_dataset: which split (XD-Violence: test = data/video/test_videos).",
)
@option(
    "--revision",
    group="Input",
    default="main",
    help="With --hf_dataset: branch, tag or commit; pinned to its commit for the whole run.",
)
@option(
    "--hf-pattern",
    "--hf_pattern",
    group="Input",
    help="With --hf_dataset: glob over its paths, e.g. 'clips/**/*.mp4' (default: all videos).",
)
@option(
    "--hf-video-column",
    "--hf_video_column",
    group="Input",
    help="With --hf_dataset: video path or URL column of its rows (via `datasets`); the other "
    "columns become labels.",
)
@option(
    "--hf-config",
    "--hf_config",
    group="Input",
    help="With --hf_dataset: dataset config (XD-Violence: video).",
)
@recipe_options(group="Model")
@storage_options_option(group="Input")
@output_dir_option(group="Run", help="Where <relative_dir>/<id>.npy go.")
@option(
    "--force_stop_after_n_videos",
    "--force-stop-after-n-videos",
    group="Run",
    type=int,
    default=-1,
    callback=minus_one_or_positive(None),
    help="Queue at most N videos that are not done; -1: all.",
)
@option(
    "--check_progress",
    "--check-progress",
    group="Run",
    type=click.Path(dir_okay=False),
    help="File of <relative_dir>/<id> lines, skipped; --wait appends those it sees finish.",
)
@option("--force", group="Run", is_flag=True, help="Redo done videos.")
@option("--dry-run", "--dry_run", group="Run", is_flag=True, help="List what would be queued; queue nothing.")
@broker_url_option(group="Queue", help="Redis URL of the queue (not with --local).")
@option(
    "--wait",
    group="Queue",
    is_flag=True,
    help="Show progress until the run ends; exit 1 if any video failed.",
)
@option(
    "--wait-timeout",
    "--wait_timeout",
    group="Queue",
    type=click.FloatRange(min=0),
    help="Stop waiting after this many seconds (exit 4); videos stay queued.",
)
@option(
    "--poll_seconds",
    "--poll-seconds",
    group="Queue",
    type=click.FloatRange(min=0.05),
    default=1.0,
    help="How often --wait polls the ledger.",
)
@option(
    "--local",
    group="Local",
    is_flag=True,
    help="Run here: a private Redis and a worker per GPU (or one on the CPU).",
)
@device_option(group="Local", help="cpu: CPU workers even with GPUs. Default: auto.")
@pretrained_dir_option(group="Local", help="Folder with the model checkpoints.")
@concurrency_option(group="Local", help="Videos in flight per worker (default: as vfx-worker).")
@pool_option(group="Local", help="Default: threads on a GPU, prefork on the CPU (see vfx-worker).")
@keep_downloads_option(group="Local", help="Workers keep the Hub videos they fetch.")
@version_option("vfx-enqueue")
@click.pass_context
# long: one parameter per option (23, and the recipe's); the body only builds the request and hands it on
def main(
    ctx: click.Context,
    *,
    input_dir: str | None,
    hf_dataset: str | None,
    split: Split,
    revision: str,
    hf_pattern: str | None,
    hf_video_column: str | None,
    hf_config: str | None,
    output_dir: str,
    force_stop_after_n_videos: int,
    check_progress: str | None,
    force: bool,
    dry_run: bool,
    broker_url: str | None,
    wait: bool,
    wait_timeout: float | None,
    poll_seconds: float,
    local: bool,
    device: str | None,
    pretrained_dir: str | None,
    concurrency: int | None,
    pool: str | None,
    keep_downloads: bool | None,
    storage_options: str | None,
    **recipe_params: Any,
) -> None:
    """Queue feature extraction for every video not done yet."""
    check_arguments(hf_dataset=hf_dataset, input_dir=input_dir, local=local, broker_url=broker_url)
    try:
        settings = Settings.from_env(
            broker_url=broker_url,
            device=device,
            pretrained_dir=pretrained_dir,
            keep_downloads=keep_downloads,
            storage_options=storage_options,
        )
        source = make_source(
            hf_dataset=hf_dataset,
            input_dir=input_dir,
            split=split,
            revision=revision,
            hf_pattern=hf_pattern,
            hf_video_column=hf_video_column,
            hf_config=hf_config,
            storage_options=settings.storage_kwargs(),
        )
        settings = Settings.from_env(
            broker_url=broker_url,
            device=device,
            pretrained_dir=pretrained_dir,
            keep_downloads=keep_downloads,
        )
        # A user's own config is built and its weights loaded here: one that cannot work stops
        # before anything is queued, and the run records the sha256 of the files it checked.
        recipe = recipe_from(recipe_params).pinned(pretrained_dir=settings.pretrained_dir)
        run = Run.create(output_dir, recipe)
        request = EnqueueRequest(
            run=run,
            source=source,
            check_progress=check_progress,
            force=force,
            dry_run=dry_run,
            max_videos=force_stop_after_n_videos,
            poll_seconds=poll_seconds,
            wait_timeout=wait_timeout,
        )
        if local:
            code = run_locally(settings, request, concurrency=concurrency, pool=pool)
        else:
            code = enqueue_and_maybe_wait(settings, request, wait=wait)
    except VfxError as e:
        raise cli_error(e) from e
    except KeyboardInterrupt:
        click.echo(
            "\nInterrupted; queued videos stay queued (with --local everything was stopped).", err=True
        )
        code = EXIT_INTERRUPTED
    ctx.exit(code)


if __name__ == "__main__":
    main()
