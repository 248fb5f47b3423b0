"""``vfx-export --format hdf5``: a whole output folder as one HDF5 file (kinder to Lustre and NFS).

One dataset per video under its relative id (``a/b/video`` is group ``a/b``, dataset ``video``),
``(clips, n_crops, D)`` float32, or per crop as ``<id>__<k>`` ``(clips, D)``; chunked and
compressed. The file's attributes hold the manifest (``vfx_manifest``, JSON) and the layout;
each dataset's hold its index row (frames, fps, clip span, clip starts, labels as JSON).

The file is written as ``DEST.part`` and renamed at the end. A killed export leaves the
``.part``; the next one reopens it and skips the datasets marked complete with their source's
mtime (a file HDF5 cannot open any more is started over). Updating a finished file moves it
back to ``DEST.part`` while it runs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from vfx_tasks.errors import ConfigurationError, DependencyError, ManifestMismatchError, OutputError
from vfx_tasks.outputs.export import (
    ExportReport,
    Layout,
    SourceVideo,
    Split,
    check_destination_manifest,
    source_manifest,
    source_videos,
)
from vfx_tasks.outputs.index import make_row, read_index, read_labels
from vfx_tasks.outputs.manifest import Manifest

if TYPE_CHECKING:
    import h5py

logger = logging.getLogger(__name__)

Compression = Literal["gzip", "lzf", "none"]
COMPRESSIONS: tuple[str, ...] = get_args(Compression)
#: Flush the file at most this often: a kill loses at most this much work.
_FLUSH_SECONDS = 2.0


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as e:
        raise DependencyError("--format hdf5 needs h5py: pip install 'h5py>=3.8'.") from e
    return h5py


def export_hdf5(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    layout: Layout = "video",
    split: Split = "all",
    compression: Compression = "gzip",
) -> ExportReport:
    """Export ``source`` into the HDF5 file ``dest``; resumable; renamed into place when complete.

    Raises:
        ConfigurationError: no source manifest, a split the source does not know.
        ManifestMismatchError: ``dest`` holds other features or another layout.
        OutputError: the file cannot be written.
    """
    h5py = _h5py()
    if compression not in COMPRESSIONS:
        raise ConfigurationError(
            f"Invalid compression ({compression!r}). Supported values are {', '.join(COMPRESSIONS)}."
        )
    started = time.perf_counter()
    manifest = source_manifest(source)
    videos = source_videos(source, manifest, split=split)
    final, part = Path(dest), Path(f"{dest}.part")
    try:
        if final.exists() and not part.exists():
            os.replace(final, part)  # an update: the finished file becomes the part being resumed
        with _open_part(h5py, part) as f:
            _claim_file(f, manifest, layout=layout, dest=str(final))
            report = _write_videos(f, source, videos, manifest, layout=layout, compression=compression)
        os.replace(part, final)
    except OSError as e:
        raise OutputError(f"Cannot write {final}: {e}. Check free space and permissions.") from e
    report.seconds = time.perf_counter() - started
    return report


def _open_part(h5py: Any, part: Path) -> h5py.File:
    part.parent.mkdir(parents=True, exist_ok=True)
    try:
        return h5py.File(part, "a")
    except OSError as e:
        # Killed while HDF5 was writing its metadata: nothing in it can be trusted.
        logger.warning("Cannot reopen %s (%s); starting the export over", part, e)
        part.unlink()
        return h5py.File(part, "w")


def _claim_file(f: h5py.File, manifest: Manifest, *, layout: str, dest: str) -> None:
    if "vfx_manifest" in f.attrs:
        earlier = Manifest.from_json(json.loads(f.attrs["vfx_manifest"]), where=dest)
        check_destination_manifest(earlier, manifest, dest=dest)
        if f.attrs.get("vfx_layout") != layout:
            raise ManifestMismatchError(
                f"{dest} holds a --layout {f.attrs.get('vfx_layout')} export; this one is --layout "
                f"{layout}. Export into another file."
            )
    f.attrs["vfx_manifest"] = json.dumps(manifest.to_json(), sort_keys=True)
    f.attrs["vfx_layout"] = layout


def _write_videos(
    f: h5py.File,
    source: str | os.PathLike[str],
    videos: list[SourceVideo],
    manifest: Manifest,
    *,
    layout: str,
    compression: Compression,
) -> ExportReport:
    report = ExportReport(videos=len(videos))
    index = read_index(source)
    n_crops = len(manifest.settings.facts.crop_order)
    last_flush = time.monotonic()
    for video in videos:
        names = [video.relative_id] if layout == "video" else [
            f"{video.relative_id}__{k}" for k in range(n_crops)
        ]
        report.entries += names
        if all(_is_current(f, name, video.mtime_ns) for name in names):
            report.up_to_date += len(names)
            continue
        features = np.load(video.path, allow_pickle=False)
        attrs = _video_attrs(source, video, manifest, index)
        for k, name in enumerate(names):
            data = features if layout == "video" else np.ascontiguousarray(features[:, k, :])
            _write_dataset(f, name, data, attrs={**attrs, "crop": k if layout != "video" else -1},
                           compression=compression, mtime_ns=video.mtime_ns)
            report.written += 1
            report.bytes_written += data.nbytes
        if time.monotonic() - last_flush > _FLUSH_SECONDS:
            f.flush()
            last_flush = time.monotonic()
    return report


def _is_current(f: h5py.File, name: str, mtime_ns: int) -> bool:
    dataset = f.get(name)
    return (
        dataset is not None
        and bool(dataset.attrs.get("vfx_complete", False))
        and int(dataset.attrs.get("source_mtime_ns", -1)) == mtime_ns
    )


def _write_dataset(
    f: h5py.File,
    name: str,
    data: np.ndarray,
    *,
    attrs: dict[str, Any],
    compression: Compression,
    mtime_ns: int,
) -> None:
    if name in f:
        del f[name]  # incomplete or stale: written again
    chunks = (min(data.shape[0], 16), *data.shape[1:])
    dataset = f.create_dataset(
        name,
        data=data,
        chunks=chunks,
        compression=None if compression == "none" else compression,
        # Level 1: float features gain little from higher levels, which cost 2-3x the time.
        compression_opts=1 if compression == "gzip" else None,
        shuffle=compression != "none",  # byte shuffling helps float32 compress
    )
    for key, value in attrs.items():
        dataset.attrs[key] = value
    dataset.attrs["source_mtime_ns"] = mtime_ns
    dataset.attrs["vfx_complete"] = True  # last: a dataset without it is written again on resume


def _video_attrs(
    source: str | os.PathLike[str], video: SourceVideo, manifest: Manifest, index: dict[str, Any]
) -> dict[str, Any]:
    """The video's index row as attributes (``frames``/``fps`` -1 where the index lacks them)."""
    known = index.get(video.relative_id)
    recipe, facts = manifest.settings.recipe, manifest.settings.facts
    row = make_row(
        video.relative_id, shape=video.shape, frames=known.frames if known else None,
        fps=known.fps if known else None, clip_len=facts.clip_len, sampling_rate=facts.sampling_rate,
        num_clips_per_video=recipe.num_clips_per_video, clip_sampling=recipe.clip_sampling,
        labels=read_labels(source, video.relative_id),
    )
    return {
        "relative_id": row.relative_id,
        "frames": -1 if row.frames is None else row.frames,
        "fps": -1.0 if row.fps is None else row.fps,
        "clips": row.clips,
        "clip_span_frames": row.clip_span_frames,
        "clip_start_frames": np.asarray(row.clip_start_frames, dtype=np.int64),
        "labels": json.dumps(row.labels, sort_keys=True) if row.labels is not None else "",
    }
