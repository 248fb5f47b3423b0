"""``vfx-export``: a finished output folder in the layouts downstream codebases read, recomputing nothing.

* ``per-crop``: ``<relative_dir>/<id>__<k>.npy``, ``(clips, D)`` each, ``k`` in the manifest's
  ``crop_order``: the layout of the public XD-Violence I3D features (RTFM, UR-DMU, PEL4VAD).
* ``video``: ``<relative_dir>/<id>.npy``, ``(clips, n_crops, D)``, as extracted (labels copied too).
* HDF5: one file, see :mod:`vfx_tasks.outputs.export_hdf5`.

Every file goes to a temporary name and is renamed into place, with the source's mtime: a file
whose header and mtime match its source is complete and skipped, so a killed export resumes
where it stopped. A destination that holds another run's export (other settings, other layout)
is refused. ``DEST/vfx-run.json`` is a copy of the source's manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from vfx_tasks.errors import ConfigurationError, ManifestMismatchError
from vfx_tasks.outputs.index import iter_feature_files, read_labels
from vfx_tasks.outputs.manifest import (
    MANIFEST_NAME,
    Manifest,
    describe_differences,
    read_manifest,
    write_manifest,
)
from vfx_tasks.storage import (
    labels_path,
    read_npy_header,
    remove_temp_files,
    write_features_atomic,
    write_text_atomic,
)

Layout = Literal["per-crop", "video"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
Split = Literal["all", "train", "test"]
SPLITS: tuple[str, ...] = get_args(Split)
EXPORT_NAME = "vfx-export.json"


@dataclass(frozen=True)
class SourceVideo:
    """One complete feature file of the source folder."""

    relative_id: str
    path: Path
    shape: tuple[int, ...]
    mtime_ns: int


@dataclass
class ExportReport:
    """What an export did. ``entries``: the exported paths (or HDF5 dataset names), in list order."""

    videos: int = 0
    written: int = 0
    up_to_date: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    entries: list[str] = field(default_factory=list)


def source_manifest(source: str | os.PathLike[str]) -> Manifest:
    """The source folder's manifest.

    Raises:
        ConfigurationError: no manifest (a folder written before them, or not an output folder).
    """
    manifest = read_manifest(source)
    if manifest is None:
        raise ConfigurationError(
            f"{source} has no {MANIFEST_NAME}, so how its features were made is unknown. Run the "
            "vfx-enqueue command that made it once more (it skips what is done and records its settings)."
        )
    return manifest


def source_videos(source: str | os.PathLike[str], manifest: Manifest, *, split: Split) -> list[SourceVideo]:
    """The complete feature files of ``source`` in ``split``, sorted by relative id.

    Raises:
        ConfigurationError: ``split`` is train or test and no video's labels name a split.
    """
    facts = manifest.settings.facts
    expected = (len(facts.crop_order), facts.feature_dim)
    videos, with_split = [], 0
    for relative_id, path in iter_feature_files(source):
        header = read_npy_header(path)
        if header is None or header[1] != np.float32 or tuple(header[0][1:]) != expected:
            continue
        if split != "all":
            video_split = (read_labels(source, relative_id) or {}).get("split")
            with_split += video_split is not None
            if video_split != split:
                continue
        videos.append(SourceVideo(relative_id, path, tuple(header[0]), path.stat().st_mtime_ns))
    if split != "all" and not with_split:
        raise ConfigurationError(
            f"--split {split}: the videos of {source} carry no split in their labels (only a dataset "
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
    source: str | os.PathLike[str], dest: str | os.PathLike[str], *, layout: Layout, split: Split = "all"
) -> ExportReport:
    """Export ``source`` into the folder ``dest`` in ``layout``; resumable, atomic per file.

    Raises:
        ConfigurationError: no source manifest, unknown layout, a split the source does not know.
        ManifestMismatchError: ``dest`` holds an export of other features or in another layout.
        OutputError: a file cannot be written.
    """
    if layout not in LAYOUTS:
        raise ConfigurationError(f"Invalid layout ({layout!r}). Supported values are {', '.join(LAYOUTS)}.")
    started = time.perf_counter()
    manifest = source_manifest(source)
    videos = source_videos(source, manifest, split=split)
    dest_root = Path(dest)
    _claim_destination(dest_root, manifest, layout=layout, source=Path(source))
    remove_temp_files(dest_root)  # left by an export that was killed: nothing else writes here
    report = ExportReport(videos=len(videos))
    n_crops = len(manifest.settings.facts.crop_order)
    for video in videos:
        if layout == "per-crop":
            targets = [(dest_root / f"{video.relative_id}__{k}.npy", k) for k in range(n_crops)]
        else:
            targets = [(dest_root / f"{video.relative_id}.npy", None)]
        features = None
        for target, k in targets:
            report.entries.append(str(target))
            expected = video.shape if k is None else (video.shape[0], video.shape[2])
            if _is_current(target, expected, video.mtime_ns):
                report.up_to_date += 1
                continue
            if features is None:
                features = np.load(video.path, allow_pickle=False)
            data = features if k is None else np.ascontiguousarray(features[:, k, :])
            write_features_atomic(target, data)
            os.utime(target, ns=(video.mtime_ns, video.mtime_ns))
            report.written += 1
            report.bytes_written += data.nbytes
        if layout == "video" and labels_path(source, video.relative_id).is_file():
            shutil.copyfile(labels_path(source, video.relative_id), labels_path(dest_root, video.relative_id))
    report.seconds = time.perf_counter() - started
    return report


def _claim_destination(dest: Path, manifest: Manifest, *, layout: str, source: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise ConfigurationError(
            f"{dest} exists and is not a folder. Give a folder, or a .h5 file with --format hdf5."
        )
    check_destination_manifest(read_manifest(dest), manifest, dest=str(dest))
    marker = dest / EXPORT_NAME
    if marker.is_file():
        earlier = json.loads(marker.read_text(encoding="utf-8")).get("layout")
        if earlier != layout:
            raise ManifestMismatchError(
                f"{dest} holds a --layout {earlier} export; this one is --layout {layout}. "
                "Export into another destination."
            )
    write_manifest(dest, manifest)
    description = {"layout": layout, "source": str(source.resolve())}
    write_text_atomic(marker, json.dumps(description, indent=1) + "\n")


def _is_current(target: Path, shape: tuple[int, ...], mtime_ns: int) -> bool:
    header = read_npy_header(target)
    if header is None or header[0] != tuple(shape) or header[1] != np.float32:
        return False
    return target.stat().st_mtime_ns == mtime_ns


def write_list(list_file: str | os.PathLike[str], entries: Sequence[str]) -> None:
    """One exported path per line, in the export's order (sorted ids, then crops), written atomically."""
    write_text_atomic(list_file, "".join(f"{entry}\n" for entry in entries), what="the list file")
