"""``vfx-enqueue``: queue every video of a folder that is not done yet; optionally wait, or run locally.

Takes every argument of the original ``video-feature-extractor`` under its name (``--input_dir``)
and with hyphens (``--input-dir``); each also reads a ``VFX_*`` environment variable.

    vfx-enqueue --input_dir videos/ --output_dir features/i3d          # queue, return at once
    vfx-enqueue --input_dir videos/ --output_dir features/i3d --wait   # ... and follow progress
    vfx-enqueue --input_dir videos/ --output_dir features/i3d --local  # everything on this machine
    vfx-enqueue --hf_dataset jherng/xd-violence --split test --output_dir features/i3d   # from the Hub
"""

from __future__ import annotations

import functools
import shutil
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

import click

from vfx_tasks.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    POOLS,
)
from vfx_tasks.errors import ConfigurationError, VfxError, WaitTimeoutError
from vfx_tasks.extract.crops import CROP_TYPES
from vfx_tasks.extract.device import PRECISIONS
from vfx_tasks.extract.sampling import CLIP_SAMPLINGS
from vfx_tasks.models import DEFAULT_MODEL, get_model_spec, model_names
from vfx_tasks.queue.app import create_app
from vfx_tasks.queue.cluster import LocalCluster
from vfx_tasks.queue.ledger import Ledger, RunSpec
from vfx_tasks.queue.producer import (
    append_check_progress,
    enqueue_videos,
    plan_videos,
    read_check_progress,
)
from vfx_tasks.queue.progress import WaitOutcome, format_duration, wait_for_videos
from vfx_tasks.queue.redis_server import RedisServer
from vfx_tasks.settings import Settings
from vfx_tasks.sources.base import LocalFolderSource, VideoSource

SPLITS = ("train", "test", "all")


def _validate_model(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return get_model_spec(value).name
    except ConfigurationError as e:
        raise click.BadParameter(str(e)) from None


def _minus_one_or_positive(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value != -1 and value < 1:
        raise click.BadParameter(f"{value} is not allowed; use -1 (no limit / all) or a number >= 1.")
    return value


# fmt: off
@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--hf_dataset", "--hf-dataset", envvar="VFX_HF_DATASET",
              help="Hugging Face dataset repository (owner/name, e.g. jherng/xd-violence) with the videos; "
                   "workers fetch each video themselves. Mutually exclusive with --input_dir.")
@click.option("--split", envvar="VFX_SPLIT", type=click.Choice(SPLITS), default="all", show_default=True,
              help="With --hf_dataset: which split (XD-Violence: test = data/video/test_videos).")
@click.option("--revision", envvar="VFX_HF_REVISION", default="main", show_default=True,
              help="With --hf_dataset: branch, tag or commit; pinned to its commit for the whole run.")
@click.option("--hf-pattern", "--hf_pattern", "hf_pattern", envvar="VFX_HF_PATTERN",
              help="With --hf_dataset: glob over paths in the repository, e.g. 'clips/**/*.mp4' "
                   "(default: every video file).")
@click.option("--hf-video-column", "--hf_video_column", "hf_video_column", envvar="VFX_HF_VIDEO_COLUMN",
              help="With --hf_dataset: load rows with `datasets` and take the video path or Hub URL from "
                   "this column; the other columns are written beside the features as labels.")
@click.option("--hf-config", "--hf_config", "hf_config", envvar="VFX_HF_CONFIG",
              help="With --hf_dataset: dataset config (XD-Violence: video).")
@click.option("--keep-downloads", "--keep_downloads", "keep_downloads", envvar="VFX_KEEP_DOWNLOADS",  # noqa: E501
              is_flag=True, default=None, help="With --local: workers keep the Hub videos they fetch.")
@click.option("--input_dir", "--input-dir", envvar="VFX_INPUT_DIR", type=click.Path(file_okay=False),
              help="Folder of videos, searched recursively. Mutually exclusive with --hf_dataset.")
@click.option("--output_dir", "--output-dir", envvar="VFX_OUTPUT_DIR", type=click.Path(file_okay=False),
              default="./data/outputs/feature/", show_default=True, help="Where <relative_dir>/<id>.npy go.")
@click.option("--batch_size", "--batch-size", envvar="VFX_BATCH_SIZE",
              type=int, default=16, show_default=True, callback=_minus_one_or_positive,
              help="Clips per forward pass; -1: all clips of a video at once.")
@click.option("--model", envvar="VFX_MODEL",
              default=DEFAULT_MODEL, show_default=True, callback=_validate_model,
              help=f"One of {', '.join(model_names(with_aliases=True))}.")
@click.option("--num_clips_per_video", "--num-clips-per-video", envvar="VFX_NUM_CLIPS_PER_VIDEO",
              type=int, default=-1, show_default=True, callback=_minus_one_or_positive,
              help="-1: every clip.")
@click.option("--crop_type", "--crop-type", envvar="VFX_CROP_TYPE", type=click.Choice(CROP_TYPES),
              default="5-crop", show_default=True)
@click.option("--clip_sampling", "--clip-sampling", envvar="VFX_CLIP_SAMPLING",
              type=click.Choice(CLIP_SAMPLINGS), default="sequential", show_default=True)
@click.option("--precision", envvar="VFX_PRECISION", type=click.Choice(PRECISIONS), default="fp32",
              show_default=True)
@click.option("--force_stop_after_n_videos", "--force-stop-after-n-videos", envvar="VFX_FORCE_STOP_AFTER_N_VIDEOS",  # noqa: E501
              type=int, default=-1, show_default=True, callback=_minus_one_or_positive,
              help="Queue at most N videos that are not done; -1: all.")
@click.option("--check_progress", "--check-progress", envvar="VFX_CHECK_PROGRESS",
              type=click.Path(dir_okay=False),
              help="Progress file, one <relative_dir>/<id> per line: listed videos are skipped; with --wait, "
                   "finished ones are appended.")
@click.option("--force", envvar="VFX_FORCE", is_flag=True, help="Queue every video again, even done ones.")
@click.option("--dry-run", "--dry_run", "dry_run", envvar="VFX_DRY_RUN", is_flag=True,
              help="List what would be queued; queue nothing.")
@click.option("--wait", envvar="VFX_WAIT", is_flag=True,
              help="Show progress until the run ends; exit 1 if any video failed.")
@click.option("--wait-timeout", "--wait_timeout", "wait_timeout", envvar="VFX_WAIT_TIMEOUT",
              type=click.FloatRange(min=0),
              help="Stop waiting after this many seconds (exit 4); unfinished videos stay queued.")
@click.option("--local", envvar="VFX_LOCAL", is_flag=True,
              help="Start a private Redis and local workers (one per GPU, else one on the CPU), run, stop.")
@click.option("--device", envvar="VFX_DEVICE", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="With --local: cpu forces CPU workers even with GPUs.")
@click.option("--pretrained_dir", "--pretrained-dir", envvar="VFX_PRETRAINED_DIR",
              type=click.Path(file_okay=False),
              help="With --local: folder with the model checkpoints.")
@click.option("--concurrency", "-c", envvar="VFX_CONCURRENCY", type=click.IntRange(min=1), default=1,
              show_default=True, help="With --local: videos each worker processes at once (see --pool).")
@click.option("--pool", envvar="VFX_POOL", type=click.Choice(POOLS), default="prefork", show_default=True,
              help="With --local: prefork gives each video in flight its own process and model; threads "
                   "shares one model between them.")
@click.option("--broker_url", "--broker-url", envvar="VFX_BROKER_URL",
              help="Redis URL of the queue (not with --local).")
@click.option("--poll_seconds", "--poll-seconds", envvar="VFX_POLL_SECONDS", type=click.FloatRange(min=0.05),
              default=1.0, show_default=True, help="How often --wait polls the ledger.")
# fmt: on
def main(**options: object) -> None:
    """Queue feature extraction for every video not done yet."""
    try:
        code = run_enqueue(**options)  # type: ignore[arg-type]
    except VfxError as e:
        click.echo(f"Error: {e}", err=True)
        code = exit_code_for(e)
    except KeyboardInterrupt:
        click.echo(
            "\nInterrupted; queued videos stay queued (with --local everything was stopped).", err=True
        )
        code = EXIT_INTERRUPTED
    sys.exit(code)


def exit_code_for(error: VfxError) -> int:
    """4 when --wait-timeout passed, else 2: bad arguments, or Redis, workers, weights or a tool missing."""
    if isinstance(error, ConfigurationError):
        return EXIT_USAGE
    if isinstance(error, WaitTimeoutError):
        return EXIT_TIMEOUT
    return EXIT_UNAVAILABLE


def run_enqueue(
    *,
    hf_dataset: str | None,
    input_dir: str | None,
    output_dir: str,
    batch_size: int,
    model: str,
    num_clips_per_video: int,
    crop_type: str,
    clip_sampling: str,
    precision: str,
    force_stop_after_n_videos: int,
    check_progress: str | None,
    force: bool,
    dry_run: bool,
    wait: bool,
    local: bool,
    device: str,
    pretrained_dir: str | None,
    broker_url: str | None,
    poll_seconds: float,
    wait_timeout: float | None = None,
    split: str = "all",
    revision: str = "main",
    hf_pattern: str | None = None,
    hf_video_column: str | None = None,
    hf_config: str | None = None,
    keep_downloads: bool | None = None,
    concurrency: int = 1,
    pool: str = "prefork",
) -> int:
    """The whole command; returns the exit code."""
    if hf_dataset and input_dir:
        raise click.UsageError("--hf_dataset and --input_dir are mutually exclusive; give one.")
    if not hf_dataset and not input_dir:
        raise click.UsageError("Give the videos with --input_dir or --hf_dataset.")
    if local and broker_url:
        raise click.UsageError("--local starts its own Redis; drop --broker_url.")
    source = _make_source(
        hf_dataset=hf_dataset,
        input_dir=input_dir,
        split=split,
        revision=revision,
        hf_pattern=hf_pattern,
        hf_video_column=hf_video_column,
        hf_config=hf_config,
    )
    run = RunSpec.create(
        output_dir,
        model=model,
        crop_type=crop_type,
        num_clips_per_video=num_clips_per_video,
        clip_sampling=clip_sampling,
        precision=precision,
    )
    settings = Settings.from_env(
        broker_url=broker_url,
        device=device,
        pretrained_dir=pretrained_dir,
        keep_downloads=keep_downloads or None,
    )
    enqueue_run = functools.partial(
        _enqueue_and_maybe_wait,
        run=run,
        source=source,
        batch_size=batch_size,
        check_progress=check_progress,
        force=force,
        dry_run=dry_run,
        max_videos=force_stop_after_n_videos,
        poll_seconds=poll_seconds,
        wait_timeout=wait_timeout,
    )
    if not local:
        return enqueue_run(settings, wait=wait)
    if dry_run:
        # Nothing will run, so no workers; a fresh local Redis has no ledger, only files count.
        with RedisServer() as server:
            return enqueue_run(settings.with_overrides(broker_url=server.url), wait=False)

    # The local workers read the weights from this machine: say now, not once per video, if
    # they are missing (the import is here because it loads torch).
    from vfx_tasks.models.checkpoint import checkpoint_path

    checkpoint_path(get_model_spec(model), settings.pretrained_dir)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C

    signal.signal(signal.SIGTERM, interrupt)
    cluster = LocalCluster(settings, output_dir=run.output_dir, concurrency=concurrency, pool=pool)

    def start_workers() -> None:
        click.echo(f"Starting local workers (logs in {cluster.log_dir})...", err=True)
        cluster.start_workers()

    try:
        # Redis first, to plan the run; workers (seconds, and a model load each) only if it has work.
        cluster.start_redis()
        local_url = cluster.broker_url
        local_settings = settings.with_overrides(broker_url=local_url, result_backend=local_url)
        code = enqueue_run(local_settings, wait=True, check=cluster.check, before_enqueue=start_workers)
    finally:
        cluster.stop()
    if code == EXIT_OK:
        shutil.rmtree(cluster.log_dir, ignore_errors=True)  # kept only when something failed
    return code


def _make_source(
    *,
    hf_dataset: str | None,
    input_dir: str | None,
    split: str,
    revision: str,
    hf_pattern: str | None,
    hf_video_column: str | None,
    hf_config: str | None,
) -> VideoSource:
    if input_dir is not None:
        hf_only = {
            "--split": split != "all",
            "--revision": revision != "main",
            "--hf-pattern": hf_pattern,
            "--hf-video-column": hf_video_column,
            "--hf-config": hf_config,
        }
        given = [name for name, value in hf_only.items() if value]
        if given:
            raise click.UsageError(
                f"{', '.join(given)} only apply to --hf_dataset; drop them with --input_dir."
            )
        return LocalFolderSource(input_dir)
    assert hf_dataset is not None
    from vfx_tasks.sources.hub_dataset import HubDatasetSource  # huggingface_hub only when asked for

    return HubDatasetSource(
        hf_dataset,
        split=split,  # type: ignore[arg-type]
        revision=revision,
        pattern=hf_pattern,
        video_column=hf_video_column,
        config=hf_config,
    )


def _enqueue_and_maybe_wait(
    settings: Settings,
    *,
    run: RunSpec,
    source: VideoSource,
    batch_size: int,
    check_progress: str | None,
    force: bool,
    dry_run: bool,
    max_videos: int,
    wait: bool,
    poll_seconds: float,
    wait_timeout: float | None,
    check: Callable[[], None] | None = None,
    before_enqueue: Callable[[], None] | None = None,
) -> int:
    """Plan, queue and optionally wait; ``before_enqueue`` runs only when there is something to queue."""
    ledger = Ledger.from_url(settings.broker_url)
    plan = plan_videos(
        source.iter_videos(),
        run=run,
        ledger=ledger,
        check_progress=read_check_progress(check_progress),
        force=force,
        max_videos=max_videos,
    )
    skipped = (
        f"{plan.skipped_output_exists} with valid output, {plan.skipped_check_progress} in "
        f"--check_progress, {plan.skipped_ledger_done} done in the ledger"
    )
    rejected = getattr(source, "rejected", [])
    if rejected:
        click.echo(f"Left out {len(rejected)} remote file(s) with unsafe names (see the warnings).", err=True)
    if getattr(source, "listed_with", None):
        listed_with, commit = source.listed_with, source.resolve_commit()  # type: ignore[attr-defined]
        click.echo(f"Listed {source!r} through {listed_with} (commit {commit}).", err=True)
    if dry_run:
        for item in plan.to_queue:
            click.echo(item.relative_id)
        click.echo(
            f"Would queue {len(plan.to_queue)} of {plan.total_found} videos (skipping {skipped}).", err=True
        )
        return EXIT_OK
    if before_enqueue is not None and plan.to_queue:
        before_enqueue()
    app = create_app(settings, producer_only=True)
    result = enqueue_videos(app, ledger, run, plan.to_queue, batch_size=batch_size, force=force)
    click.echo(
        f"Queued {len(result.queued)} of {plan.total_found} videos; "
        f"{len(result.already_queued)} were already queued; skipped {skipped}. "
        f"Run {run.run_id}, output {run.output_dir}.",
        err=True,
    )
    if not wait:
        return EXIT_OK
    watched = result.queued + result.already_queued
    if not watched:
        click.echo("Nothing to wait for: every video is done already.", err=True)
        return EXIT_OK
    deadline = None if wait_timeout is None else time.monotonic() + wait_timeout

    def check_running() -> None:
        if check is not None:
            check()
        if deadline is not None and time.monotonic() > deadline:
            raise WaitTimeoutError(
                f"Stopped waiting after {wait_timeout:g} s; the unfinished videos stay queued "
                f"(see vfx-status --output_dir {run.output_dir})."
            )

    outcome = wait_for_videos(
        ledger,
        run.run_id,
        watched,
        poll_seconds=poll_seconds,
        on_done=(lambda ids: append_check_progress(check_progress, ids)) if check_progress else None,
        check=check_running,
    )
    return _report(outcome)


def _report(outcome: WaitOutcome) -> int:
    click.echo(
        f"{len(outcome.done)} done, {len(outcome.failed)} failed of {outcome.total} in "
        f"{format_duration(outcome.seconds)} ({outcome.clips} clips).",
        err=True,
    )
    for relative_id, reason in sorted(outcome.failed.items()):
        click.echo(f"FAILED {relative_id}: [{reason.get('code')}] {reason.get('message')}", err=True)
    return EXIT_FAILED if outcome.failed else EXIT_OK


if __name__ == "__main__":
    main()
