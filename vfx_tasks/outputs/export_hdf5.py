"""``vfx-export --format hdf5``: a whole output folder as one HDF5 file (kinder to Lustre and NFS).

One dataset per video under its relative id (``a/b/video`` is group ``a/b``, dataset ``video``),
``(clips, n_crops, D)`` float32, or per crop as ``<id>__<k>`` ``(clips, D)``; chunked and
compressed. The file's attributes hold the manifest (``vfx_manifest``, JSON) and the layout;
each dataset's hold its index row (frames, fps, clip span, clip starts, labels as JSON).

Both are opened without following links (``DEST`` is reached from its folder's descriptor and
handed to HDF5 as ``/proc/self/fd/N``, the very file opened). Names that HDF5 cannot hold side
by side (``a.npy`` beside a folder ``a/`` in the video layout) are refused before anything is
written. The file is written as ``DEST.part`` and renamed at the end. A killed export leaves the
``.part``; the next one reopens it and skips the datasets marked complete with their source's
mtime (a file HDF5 cannot open any more is started over). Updating a finished file moves it
back to ``DEST.part`` while it runs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
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
    read_source_features,
    source_manifest,
    source_videos,
)
from vfx_tasks.outputs.folder import read_labels
from vfx_tasks.outputs.index import INDEX_NAME, IndexRow, make_row, read_index
from vfx_tasks.outputs.manifest import Manifest
from vfx_tasks.storage import Folder, LocalFolder, is_url, open_folder

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
    storage_options: Mapping[str, Any] | None = None,
) -> ExportReport:
    """Export ``source`` (a folder or a URL) into the local HDF5 file ``dest``; resumable; renamed
    into place when complete.

    Raises:
        ConfigurationError: no source manifest, a split the source does not know, names HDF5
            cannot hold side by side, a damaged manifest, index or labels file.
        ManifestMismatchError: ``dest`` holds other features or another layout.
        UnsafeFileError: a link (or a file that is no regular file) in the source, or at ``dest``.
        OutputError: the file cannot be written.
    """
    h5py = _h5py()
    if compression not in COMPRESSIONS:
        raise ConfigurationError(
            f"Invalid compression ({compression!r}). Supported values are {', '.join(COMPRESSIONS)}."
        )
    if is_url(str(dest)):
        raise ConfigurationError(
            f"--format hdf5 writes one local file, not {dest}: HDF5 needs a file it can seek in. Export to "
            "a local .h5 and copy it (aws s3 cp, gsutil cp), or use --format npy for object storage."
        )
    started = time.perf_counter()
    final = Path(dest)
    with open_folder(source, storage_options=storage_options) as src:
        manifest = source_manifest(src)
        videos = source_videos(src, manifest, split=split)
        names = _dataset_names(videos, layout=layout, n_crops=len(manifest.settings.facts.crop_order))
        _check_names(names, source=src.path, dest=final)
        # Every row and label is read before the file is touched: a damaged one leaves nothing behind.
        index = read_index(src)
        attrs = [_video_attrs(src, video, manifest, index) for video in videos]
        with LocalFolder.open(final.parent, create=True) as out:
            part = final.name + ".part"
            if out.lstat(final.name) is not None and out.lstat(part) is None:
                out.rename(final.name, part)  # an update: the finished file becomes the part being resumed
            fd = out.open_writable(part)
            try:
                with _open_part(h5py, fd, out.path / part) as f:
                    _claim_file(f, manifest, layout=layout, dest=str(final))
                    report = _write_videos(f, src, videos, names, attrs, compression=compression)
            except OSError as e:
                raise OutputError(f"Cannot write {final}: {e}. Check free space and permissions.") from e
            finally:
                os.close(fd)
            out.rename(part, final.name)
    report.seconds = time.perf_counter() - started
    return report


def _dataset_names(videos: list[SourceVideo], *, layout: str, n_crops: int) -> list[list[str]]:
    """Each video's dataset names: its relative id, or one ``<id>__<k>`` per crop."""
    if layout == "video":
        return [[video.relative_id] for video in videos]
    return [[f"{video.relative_id}__{k}" for k in range(n_crops)] for video in videos]


def _check_names(names: list[list[str]], *, source: Any, dest: Path) -> None:
    """Refuse a dataset name that is also a group on another's path (``a`` and ``a/b``).

    Raises:
        ConfigurationError: naming both files.
    """
    datasets = {name for video in names for name in video}
    for name in sorted(datasets):
        parts = name.split("/")
        for depth in range(1, len(parts)):
            group = "/".join(parts[:depth])
            if group in datasets:
                raise ConfigurationError(
                    f"{source / group}.npy and the folder {source / group}/ (holding {name}) cannot both go "
                    f"into {dest}: HDF5 name {group!r} would be a dataset and a group. Use --layout "
                    "per-crop, export to a folder, or rename one of them."
                )


def _open_part(h5py: Any, fd: int, part: Path) -> h5py.File:
    """The part file open in HDF5 through ``fd`` (never through its name again)."""
    path = f"/proc/self/fd/{fd}"
    if os.fstat(fd).st_size == 0:
        return h5py.File(path, "w")
    try:
        return h5py.File(path, "a")
    except OSError as e:
        # Killed while HDF5 was writing its metadata: nothing in it can be trusted.
        logger.warning("Cannot reopen %s (%s); starting the export over", part, e)
        return h5py.File(path, "w")


def _claim_file(f: h5py.File, manifest: Manifest, *, layout: str, dest: str) -> None:
    if "vfx_manifest" in f.attrs:
        try:
            recorded = json.loads(f.attrs["vfx_manifest"])
        except (TypeError, ValueError, RecursionError) as e:
            raise ConfigurationError(
                f"{dest}.part's vfx_manifest attribute is not JSON ({e}). Remove {dest}.part and "
                "export again."
            ) from e
        earlier = Manifest.from_json(recorded, where=dest)
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
    source: Folder,
    videos: list[SourceVideo],
    names: list[list[str]],
    attrs: list[dict[str, Any]],
    *,
    compression: Compression,
) -> ExportReport:
    report = ExportReport(videos=len(videos))
    last_flush = time.monotonic()
    for video, video_names, video_attrs in zip(videos, names, attrs, strict=True):
        report.entries += video_names
        if all(_is_current(f, name, video.mtime_ns) for name in video_names):
            report.up_to_date += len(video_names)
            continue
        features = read_source_features(source, video)
        per_crop = len(video_names) > 1 or video_names[0] != video.relative_id
        for k, name in enumerate(video_names):
            data = np.ascontiguousarray(features[:, k, :]) if per_crop else features
            _write_dataset(f, name, data, attrs={**video_attrs, "crop": k if per_crop else -1},
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
    source: Folder, video: SourceVideo, manifest: Manifest, index: dict[str, IndexRow]
) -> dict[str, Any]:
    """The video's index row as attributes (``frames``/``fps`` -1 where the index lacks them).

    Raises:
        ConfigurationError: the index's frame count for the video does not fit its features.
    """
    known = index.get(video.relative_id)
    recipe, facts = manifest.settings.recipe, manifest.settings.facts
    try:
        row = make_row(
            video.relative_id, shape=video.shape, frames=known.frames if known else None,
            fps=known.fps if known else None, sampler=facts.frame_sampler(),
            num_clips_per_video=recipe.num_clips_per_video, clip_sampling=recipe.clip_sampling,
            labels=read_labels(source, video.relative_id),
        )
    except ConfigurationError as e:
        raise ConfigurationError(
            f"{source.path / INDEX_NAME} is damaged: {e} Rebuild it with vfx-status --output_dir "
            f"{source.path} --write-index."
        ) from e
    return {
        "relative_id": row.relative_id,
        "frames": -1 if row.frames is None else row.frames,
        "fps": -1.0 if row.fps is None else row.fps,
        "clips": row.clips,
        "clip_span_frames": row.clip_span_frames,
        "clip_start_frames": np.asarray(row.clip_start_frames, dtype=np.int64),
        "labels": json.dumps(row.labels, sort_keys=True) if row.labels is not None else "",
    }
