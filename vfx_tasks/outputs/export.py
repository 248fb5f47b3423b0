"""``vfx-export``: a finished output folder in the layouts downstream codebases read, recomputing nothing.

* ``per-crop``: ``<relative_dir>/<id>__<k>.npy``, ``(clips, D)`` each, ``k`` in the manifest's
  ``crop_order``: the layout of the public XD-Violence I3D features (RTFM, UR-DMU, PEL4VAD).
* ``video``: ``<relative_dir>/<id>.npy``, ``(clips, n_crops, D)``, as extracted (labels copied too).
* HDF5: one file, see :mod:`vfx_tasks.outputs.export_hdf5`.

Every file goes to a temporary name and is renamed into place, with the source's mtime: a file
whose header and mtime match its source is complete and skipped, so a killed export resumes
where it stopped. A destination that holds another run's export (other settings, other layout)
is refused. ``DEST/vfx-run.json`` is a copy of the source's manifest.

Either folder may be in object storage (``s3://...``): a PUT sets its object's time, so there a
file is current when it is at least as new as its source.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from vfx_tasks.errors import ConfigurationError, ManifestMismatchError, OutputError
from vfx_tasks.outputs.folder import MAX_LABELS_FILE_BYTES, iter_feature_files, read_labels
from vfx_tasks.outputs.manifest import (
    MANIFEST_NAME,
    Manifest,
    describe_differences,
    read_manifest,
    write_manifest,
)
from vfx_tasks.storage import (
    LABELS_TEMP_SUFFIX,
    Folder,
    features_name,
    is_url,
    labels_name,
    npy_header,
    open_folder,
    read_features,
    read_json,
    reserved_name_problem,
    write_features,
    write_json,
    write_text_atomic,
)

Layout = Literal["per-crop", "video"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
Split = Literal["all", "train", "test"]
SPLITS: tuple[str, ...] = get_args(Split)
EXPORT_NAME = "vfx-export.json"
#: ``vfx-export.json`` holds the layout and the source's path: a few hundred bytes.
_MAX_EXPORT_DESCRIPTION_BYTES = 1 << 20


@dataclass(frozen=True)
class SourceVideo:
    """One complete feature file of the source folder."""

    relative_id: str
    shape: tuple[int, ...]
    mtime_ns: int

    @property
    def feature_file(self) -> str:
        """The file's name in the source folder."""
        return features_name(self.relative_id)


@dataclass
class ExportReport:
    """What an export did. ``entries``: the exported paths (or HDF5 dataset names), in list order."""

    videos: int = 0
    written: int = 0
    up_to_date: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    entries: list[str] = field(default_factory=list)


def source_manifest(source: Folder) -> Manifest:
    """The source folder's manifest.

    Raises:
        ConfigurationError: no manifest (a folder written before them, or not an output folder).
    """
    manifest = read_manifest(source)
    if manifest is None:
        raise ConfigurationError(
            f"{source.path} has no {MANIFEST_NAME}, so how its features were made is unknown. Run the "
            "vfx-enqueue command that made it once more (it skips what is done and records its settings)."
        )
    return manifest


def source_videos(source: Folder, manifest: Manifest, *, split: Split) -> list[SourceVideo]:
    """The complete feature files of ``source`` in ``split``, sorted by relative id.

    Raises:
        ConfigurationError: ``split`` is train or test and no video's labels name a split, or a
            labels file is damaged.
        UnsafeFileError: a link in the folder.
    """
    facts = manifest.settings.facts
    expected = (len(facts.crop_order), facts.feature_dim)
    videos, with_split = [], 0
    for relative_id in iter_feature_files(source):
        name = features_name(relative_id)
        header = npy_header(source, name)
        info = source.lstat(name)
        if header is None or info is None or header[1] != "float32" or tuple(header[0][1:]) != expected:
            continue
        if split != "all":
            video_split = (read_labels(source, relative_id) or {}).get("split")
            with_split += video_split is not None
            if video_split != split:
                continue
        videos.append(SourceVideo(relative_id, tuple(header[0]), info.st_mtime_ns))
    if split != "all" and not with_split:
        raise ConfigurationError(
            f"--split {split}: the videos of {source.path} carry no split in their labels (only a dataset "
            "with splits, such as XD-Violence, does). Use --split all."
        )
    return videos


def check_destination_manifest(dest_manifest: Manifest | None, source: Manifest, *, dest: str) -> None:
    """Refuse a destination that holds an export of other features.

    Raises:
        ManifestMismatchError: the settings differ.
    """
    if dest_manifest is None:
        return
    differences = source.differences(dest_manifest)
    if differences:
        raise ManifestMismatchError(
            f"{dest} holds an export of other features: "
            f"{describe_differences(differences, ours='source', theirs='destination')}. "
            "Export into another destination, or remove it first."
        )


def export_folder(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    layout: Layout,
    split: Split = "all",
    storage_options: Mapping[str, Any] | None = None,
) -> ExportReport:
    """Export ``source`` into the folder ``dest`` in ``layout``; resumable, atomic per file.

    Either may be a URL (``storage_options`` for its client). No link inside either folder is
    followed: one is refused, and so is a damaged file, with its name.

    Raises:
        ConfigurationError: no source manifest, unknown layout, a split the source does not know,
            a damaged manifest, index or labels file.
        ManifestMismatchError: ``dest`` holds an export of other features or in another layout.
        UnsafeFileError: a link (or a file that is no regular file) in either folder.
        OutputError: a file cannot be written.
    """
    if layout not in LAYOUTS:
        raise ConfigurationError(f"Invalid layout ({layout!r}). Supported values are {', '.join(LAYOUTS)}.")
    started = time.perf_counter()
    with open_folder(source, storage_options=storage_options) as src:
        manifest = source_manifest(src)
        videos = source_videos(src, manifest, split=split)
        if not is_url(str(dest)) and Path(dest).exists() and not Path(dest).is_dir():
            raise ConfigurationError(
                f"{dest} exists and is not a folder. Give a folder, or a .h5 file with --format hdf5."
            )
        with open_folder(dest, create=True, storage_options=storage_options) as out:
            shown = str(source) if is_url(str(source)) else str(Path(source).resolve())
            _claim_destination(out, manifest, layout=layout, source=shown)
            out.remove_temp_files()  # left by an export that was killed: nothing else writes here
            report = ExportReport(videos=len(videos))
            n_crops = len(manifest.settings.facts.crop_order)
            for video in videos:
                _export_video(src, out, video, n_crops=n_crops, layout=layout, report=report)
    report.seconds = time.perf_counter() - started
    return report


def _export_video(
    src: Folder, out: Folder, video: SourceVideo, *, n_crops: int, layout: str, report: ExportReport
) -> None:
    if layout == "per-crop":
        targets = [(f"{video.relative_id}__{k}.npy", k) for k in range(n_crops)]
    else:
        targets = [(video.feature_file, None)]
    features = None
    for target, k in targets:
        report.entries.append(str(out.path / target))
        expected = video.shape if k is None else (video.shape[0], video.shape[2])
        if _is_current(out, target, expected, video.mtime_ns):
            report.up_to_date += 1
            continue
        if features is None:
            features = read_source_features(src, video)
        data = features if k is None else features[:, k, :]
        write_features(out, target, data, mtime_ns=video.mtime_ns)
        report.written += 1
        report.bytes_written += data.nbytes
    if layout == "video" and reserved_name_problem(video.relative_id) is None:
        labels = src.read_bytes(labels_name(video.relative_id), limit=MAX_LABELS_FILE_BYTES)
        if labels is not None:
            out.write_atomic(labels_name(video.relative_id), lambda f: f.write(labels), what="labels",
                             temp_suffix=LABELS_TEMP_SUFFIX)


def read_source_features(src: Folder, video: SourceVideo) -> np.ndarray:
    """The video's features, as listed.

    Raises:
        OutputError: the file changed since it was listed (run the export again).
    """
    features = read_features(src, video.feature_file)
    if features.shape != video.shape:
        raise OutputError(
            f"{src.path / video.feature_file} changed while being exported ({features.shape}, listed as "
            f"{video.shape}). Run the export again."
        )
    return features


def _claim_destination(dest: Folder, manifest: Manifest, *, layout: str, source: str) -> None:
    check_destination_manifest(read_manifest(dest), manifest, dest=str(dest.path))
    description = read_json(
        dest, EXPORT_NAME, limit=_MAX_EXPORT_DESCRIPTION_BYTES, what="(an export description)"
    )
    if description is not None:
        earlier = description.get("layout") if isinstance(description, dict) else None
        if earlier != layout:
            raise ManifestMismatchError(
                f"{dest.path} holds a --layout {earlier} export; this one is --layout {layout}. "
                "Export into another destination."
            )
    write_manifest(dest, manifest)
    write_json(dest, EXPORT_NAME, {"layout": layout, "source": source},
               what="the export description")


def _is_current(folder: Folder, target: str, shape: tuple[int, ...], mtime_ns: int) -> bool:
    header = npy_header(folder, target)
    if header is None or header[0] != tuple(shape) or header[1] != "float32":
        return False
    info = folder.lstat(target)
    if info is None:
        return False
    # A local copy carries its source's time; an object gets the time of its PUT, after the source's.
    return info.st_mtime_ns == mtime_ns if folder.keeps_mtime else info.st_mtime_ns >= mtime_ns


def write_list(list_file: str | os.PathLike[str], entries: Sequence[str]) -> None:
    """One exported path per line, in the export's order (sorted ids, then crops), written atomically."""
    write_text_atomic(list_file, "".join(f"{entry}\n" for entry in entries), what="the list file")
