"""What a worker process keeps between tasks: its loaded models and their inference loops.

Each worker process loads a model the first time a task needs it and keeps it for every later
task (:func:`get_extractor`), with one inference loop per model and batch shape that every
video in flight in the process feeds (:func:`get_batching_loop`). Nothing is loaded in the
parent before it forks children: CUDA does not survive a fork, and the parent has no use for a
model. With Celery's ``threads`` pool the tasks of one process share both: loading is guarded by
a lock, and a forward pass only reads the weights.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from vfx_tasks.errors import TaskTimeoutError
from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.models.user_model import fetch_pinned_checkpoint
from vfx_tasks.queue.job import Job
from vfx_tasks.settings import Settings

if TYPE_CHECKING:
    from vfx_tasks.extract.batching import BatchingLoop
    from vfx_tasks.extract.pipeline import FeatureExtractor, VideoFeatures

logger = logging.getLogger(__name__)

_ExtractorKey = tuple[str, ...]
_extractors: dict[_ExtractorKey, FeatureExtractor] = {}
#: One inference loop per loaded model and batch capacity (clip-crops), shared by the videos in flight.
_loops: dict[tuple[_ExtractorKey, int], BatchingLoop] = {}
#: Guards the caches above: with the threads pool, tasks start side by side.
_lock = threading.Lock()


def _extractor_key(recipe: Recipe, *, settings: Settings) -> _ExtractorKey:
    # A user's model is its files' contents: a config edited between runs is another model.
    model = (recipe.model_spec().name, recipe.model_config, recipe.model_config_sha256, recipe.checkpoint,
             recipe.checkpoint_sha256)
    return (*model, settings.device, recipe.precision, str(settings.pretrained_dir))


def get_extractor(recipe: Recipe, *, settings: Settings) -> FeatureExtractor:
    """The process's loaded model for the recipe's model and precision, loading it on first use
    (a user's checkpoint URL is fetched first, verified against the sha256 its run pinned)."""
    from vfx_tasks.extract.pipeline import FeatureExtractor  # torch + mmaction2 only where a task runs

    key = _extractor_key(recipe, settings=settings)
    with _lock:  # one load per process, however many tasks ask at once
        if key not in _extractors:
            import torch

            spec = recipe.model_spec()
            fetch_pinned_checkpoint(spec, settings.pretrained_dir)
            if settings.torch_threads:
                torch.set_num_threads(settings.torch_threads)
            logger.info(
                "Loading %s on %s (%s) in process %d, %d CPU threads",
                spec.name, settings.device, recipe.precision, os.getpid(), torch.get_num_threads(),
            )
            _extractors[key] = FeatureExtractor(
                spec, pretrained_dir=settings.pretrained_dir, device=settings.device,
                precision=recipe.precision, max_pixels=settings.max_pixels,
            )
        return _extractors[key]


def get_batching_loop(recipe: Recipe, *, settings: Settings) -> BatchingLoop:
    """The process's inference loop for the recipe's model and batch (see :func:`loop_shape`: on a
    GPU ``batch_size`` x crops clip-crops per forward).

    Every video in flight in this process with the same model and batch feeds the same loop, so
    that its forwards are full whatever the videos' lengths; ``settings.decoders`` of them decode
    at a time.
    """
    from vfx_tasks.extract.batching import BatchingLoop, loop_shape

    extractor = get_extractor(recipe, settings=settings)
    batch_clip_crops, inference_threads = loop_shape(
        extractor.device, batch_size=recipe.batch_size, crop_type=recipe.crop_type, decoders=settings.decoders
    )
    key = (_extractor_key(recipe, settings=settings), batch_clip_crops)
    with _lock:
        if key not in _loops:
            _loops[key] = BatchingLoop(
                extractor,
                batch_clip_crops=batch_clip_crops,
                decoders=settings.decoders,
                inference_threads=inference_threads,
            )
        return _loops[key]


def extract_job(job: Job, video_path: str, *, settings: Settings) -> VideoFeatures:
    """The features of a job's video: through the process's inference loop, or on their own
    when the job asks for all clips of a video in one forward (``batch_size`` -1)."""
    recipe = job.recipe
    if recipe.batch_size == -1:
        return get_extractor(recipe, settings=settings).extract(
            video_path,
            crop_type=recipe.crop_type,
            num_clips_per_video=recipe.num_clips_per_video,
            batch_size=-1,
            clip_sampling=recipe.clip_sampling,
            decoder=recipe.decoder,
        )
    limit = settings.task_soft_time_limit_seconds
    loop = get_batching_loop(recipe, settings=settings)
    try:
        result = loop.extract(
            video_path,
            crop_type=recipe.crop_type,
            num_clips_per_video=recipe.num_clips_per_video,
            clip_sampling=recipe.clip_sampling,
            decoder=recipe.decoder,
            decoder_threads=settings.decoder_threads,
            # The threads pool has no time limits of its own: the loop keeps the soft one.
            deadline=time.monotonic() + limit if limit else None,
        )
    except TaskTimeoutError as e:
        raise TaskTimeoutError(
            f"{job.relative_id} ran past the soft time limit of {limit} s "
            "(VFX_TASK_SOFT_TIME_LIMIT_SECONDS): a stalled decoder, or a video too long for this "
            "worker. Raise the limit (and VFX_TASK_TIME_LIMIT_SECONDS) for very long videos."
        ) from e
    stats = loop.stats
    logger.info(
        "%s: %d clips in %.1f s; inference loop so far: %d forwards, %d shared between videos, "
        "batch fill %.0f%%",
        job.relative_id, result.shape[0], result.seconds, stats.forwards, stats.shared_forwards,
        100 * stats.batch_fill,
    )
    return result


def forget_models() -> None:
    """Drop what a forked child inherited: it must build its own models (CUDA does not fork)."""
    _extractors.clear()
    _loops.clear()


def release_models() -> None:
    """Stop the inference loops and let the models go (the process is shutting down)."""
    for loop in _loops.values():
        loop.close()
    _loops.clear()
    _extractors.clear()
