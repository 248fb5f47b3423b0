"""What a worker reads and writes beside the features: the folder's manifest, its index row."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vfx_tasks.extract.sampling import FrameSampler
from vfx_tasks.outputs.index import INDEX_NAME, append_row, make_row
from vfx_tasks.outputs.manifest import check_task_settings, manifest_for
from vfx_tasks.queue.job import Job
from vfx_tasks.settings import Settings
from vfx_tasks.storage import Folder

if TYPE_CHECKING:
    from vfx_tasks.extract.pipeline import VideoFeatures


def check_job_settings(job: Job, folder: Folder, *, settings: Settings) -> None:
    """Refuse a task whose settings (or checkpoint) differ from its output folder's manifest, or
    whose folder's index could take no row (before minutes of work, not after).

    Raises:
        ManifestMismatchError: they differ (permanent).
        UnsafeFileError: the manifest or the index is a link, not a regular file, or too big.
    """
    manifest = manifest_for(job.recipe, pretrained_dir=settings.pretrained_dir)
    check_task_settings(folder, manifest)
    folder.check_appendable(INDEX_NAME)


def record_index_row(job: Job, result: VideoFeatures, folder: Folder) -> None:
    """Append the video's row to ``<output_dir>/index.csv`` (after its features are in place).

    Object storage cannot append: there the ledger's done summary (frames, fps, shape) is the row,
    and the index is written whole at the end of ``vfx-enqueue --wait`` or by
    ``vfx-status --write-index``.
    """
    if not folder.can_append:
        return
    row = make_row(
        job.relative_id,
        shape=result.shape,
        frames=result.num_frames,
        fps=result.fps,
        sampler=FrameSampler.of(job.recipe.model_spec()),
        num_clips_per_video=job.recipe.num_clips_per_video,
        clip_sampling=job.recipe.clip_sampling,
        labels=job.labels,
    )
    append_row(folder, row)
