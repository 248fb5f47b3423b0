"""``index.csv``: one row per done video, beside the manifest, for aligning clips with frame labels.

Workers append a row after each video's features are renamed into place: one ``write`` of one
line on a file opened with ``O_APPEND``, under ``flock``, then ``fsync``. A reader keeps the last
row of each video and ignores a torn last line, so a duplicate task or a killed worker does no
harm. ``vfx-status --write-index`` rebuilds the whole file from the feature files, the ledger's
summaries and the labels beside the features.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vfx_tasks.errors import OutputError
from vfx_tasks.extract.sampling import sample_clip_indices
from vfx_tasks.storage import TEMP_PREFIX, labels_path, read_npy_header, write_text_atomic

INDEX_NAME = "index.csv"
COLUMNS = (
    "relative_id", "feature_file", "frames", "fps", "clips", "shape", "clip_span_frames",
    "clip_start_frames", "labels",
)


@dataclass(frozen=True)
class IndexRow:
    """One done video. ``frames``/``fps`` are ``None`` when a rebuilt index could not learn them."""

    relative_id: str
    frames: int | None
    fps: float | None
    shape: tuple[int, ...]
    clip_span_frames: int
    #: First source frame of each clip (``k * 64`` for sequential sampling).
    clip_start_frames: tuple[int, ...] = ()
    labels: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def clips(self) -> int:
        return self.shape[0]

    @property
    def feature_file(self) -> str:
        return self.relative_id + ".npy"

    def to_csv_line(self) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow([
            self.relative_id, self.feature_file, "" if self.frames is None else self.frames,
            "" if self.fps is None else repr(float(self.fps)), self.clips,
            "x".join(map(str, self.shape)), self.clip_span_frames,
            " ".join(map(str, self.clip_start_frames)),
            "" if self.labels is None else json.dumps(self.labels, ensure_ascii=False, sort_keys=True),
        ])
        return out.getvalue()

    @classmethod
    def from_csv(cls, values: list[str]) -> IndexRow:
        row = dict(zip(COLUMNS, values, strict=True))
        return cls(
            relative_id=row["relative_id"],
            frames=int(row["frames"]) if row["frames"] else None,
            fps=float(row["fps"]) if row["fps"] else None,
            shape=tuple(int(n) for n in row["shape"].split("x")),
            clip_span_frames=int(row["clip_span_frames"]),
            clip_start_frames=tuple(int(n) for n in row["clip_start_frames"].split()),
            labels=json.loads(row["labels"]) if row["labels"] else None,
        )


def make_row(
    relative_id: str,
    *,
    shape: tuple[int, ...],
    frames: int | None,
    fps: float | None,
    clip_len: int,
    sampling_rate: int,
    num_clips_per_video: int,
    clip_sampling: str,
    labels: Mapping[str, Any] | None,
) -> IndexRow:
    """The row of one video; clip starts are recomputed with the extraction's own sampling."""
    starts: tuple[int, ...] = ()
    if frames:
        clips = sample_clip_indices(
            frames, clip_len=clip_len, sampling_rate=sampling_rate,
            num_clips_per_video=num_clips_per_video, clip_sampling=clip_sampling,  # type: ignore[arg-type]
        )
        starts = tuple(int(i) for i in clips[:, 0])
    return IndexRow(relative_id, frames, fps, tuple(shape), clip_len * sampling_rate, starts, labels)


def index_path(output_dir: str | os.PathLike[str]) -> Path:
    return Path(output_dir) / INDEX_NAME


def append_row(output_dir: str | os.PathLike[str], row: IndexRow) -> None:
    """Append ``row`` to the folder's index (the header first in a new file); safe across processes.

    Raises:
        OutputError: the index cannot be written.
    """
    path = index_path(output_dir)
    line = row.to_csv_line().encode("utf-8")
    try:
        while True:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # A rebuild may have renamed a new index over the one we locked: append to that one.
                if not path.exists() or os.fstat(fd).st_ino != path.stat().st_ino:
                    continue
                header = (",".join(COLUMNS) + "\n").encode() if os.fstat(fd).st_size == 0 else b""
                os.write(fd, header + line)
                os.fsync(fd)
                return
            finally:
                os.close(fd)  # also drops the lock
    except OSError as e:
        raise OutputError(f"Cannot append to {path}: {e}. Check free space and permissions.") from e


def read_index(output_dir: str | os.PathLike[str]) -> dict[str, IndexRow]:
    """``relative_id -> row``, the last row of each video winning; empty without an index."""
    try:
        text = index_path(output_dir).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a torn last line: its writer died mid-write
    rows: dict[str, IndexRow] = {}
    for values in list(csv.reader(io.StringIO(text)))[1:]:
        if len(values) == len(COLUMNS):
            row = IndexRow.from_csv(values)
            rows[row.relative_id] = row
    return rows


def iter_feature_files(output_dir: str | os.PathLike[str]) -> Iterator[tuple[str, Path]]:
    """``(relative_id, path)`` of every ``.npy`` under the folder, sorted; temporary files left out."""
    root = Path(output_dir)
    found = []
    for path in root.rglob("*.npy"):
        relative = path.relative_to(root)
        if path.name.startswith(TEMP_PREFIX) or any(p.startswith(".") for p in relative.parts):
            continue
        found.append((relative.with_suffix("").as_posix(), path))
    yield from sorted(found)


def read_labels(output_dir: str | os.PathLike[str], relative_id: str) -> dict[str, Any] | None:
    """The labels written beside a video's features, or ``None``."""
    try:
        return json.loads(labels_path(output_dir, relative_id).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def rebuild_index(
    output_dir: str | os.PathLike[str],
    *,
    summaries: Mapping[str, Mapping[str, Any]],
    clip_len: int,
    sampling_rate: int,
    num_clips_per_video: int,
    clip_sampling: str,
    feature_shape: tuple[int, int],
) -> list[IndexRow]:
    """Rewrite the index from the valid feature files; return its rows.

    Frames and fps come from the ledger's done ``summaries`` or the old index; a file known to
    neither gets empty ``frames``/``fps``.
    """
    path = index_path(output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        # Hold the appenders' lock, so no row lands in the file being replaced.
        fcntl.flock(fd, fcntl.LOCK_EX)
        rows = _rows_from_files(
            output_dir, summaries=summaries, old=read_index(output_dir), clip_len=clip_len,
            sampling_rate=sampling_rate, num_clips_per_video=num_clips_per_video,
            clip_sampling=clip_sampling, feature_shape=feature_shape,
        )
        text = ",".join(COLUMNS) + "\n" + "".join(row.to_csv_line() for row in rows)
        write_text_atomic(path, text, what="the index")
    finally:
        os.close(fd)
    return rows


def _rows_from_files(
    output_dir: str | os.PathLike[str],
    *,
    summaries: Mapping[str, Mapping[str, Any]],
    old: Mapping[str, IndexRow],
    clip_len: int,
    sampling_rate: int,
    num_clips_per_video: int,
    clip_sampling: str,
    feature_shape: tuple[int, int],
) -> list[IndexRow]:
    rows = []
    for relative_id, path in iter_feature_files(output_dir):
        header = read_npy_header(path)
        if header is None or header[1] != np.float32 or tuple(header[0][1:]) != feature_shape:
            continue
        summary = summaries.get(relative_id, {})
        previous = old.get(relative_id)
        frames = summary.get("num_frames", previous.frames if previous else None)
        fps = summary.get("fps", previous.fps if previous else None)
        rows.append(make_row(
            relative_id, shape=header[0], frames=frames, fps=fps, clip_len=clip_len,
            sampling_rate=sampling_rate, num_clips_per_video=num_clips_per_video,
            clip_sampling=clip_sampling, labels=read_labels(output_dir, relative_id),
        ))
    return rows
