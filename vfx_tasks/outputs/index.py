"""``index.csv``: one row per done video, beside the manifest, for aligning clips with frame labels.

Workers append a row after each video's features are renamed into place: one ``write`` of one
line on a file opened with ``O_APPEND``, under ``flock``, then ``fsync``. A reader keeps the last
row of each video and ignores a torn last line, so a duplicate task or a killed worker does no
harm. ``vfx-status --write-index`` rebuilds the whole file from the feature files, the ledger's
summaries and the labels beside the features. Object storage cannot append: there the ledger's
done summaries hold the rows, and the index is rebuilt whole from them and one listing (at the end
of ``vfx-enqueue --wait``, and by ``vfx-status --write-index``).

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab, a carriage return or ``'`` is written
with a ``'`` in front, so a spreadsheet shows a video named ``=HYPERLINK(...)`` as text instead of
running it as a formula; :func:`read_index` takes the ``'`` off again.
"""

# long: one file format (its cells, rows, appends, reads and the rebuild from files or a listing);
# split, a change to a column would have to be made in several places.

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfx_tasks.errors import ConfigurationError
from vfx_tasks.extract.sampling import FrameSampler
from vfx_tasks.outputs.folder import iter_feature_files, read_labels
from vfx_tasks.storage import (
    Folder,
    FolderLike,
    NpyHeader,
    features_match,
    folder_exists,
    header_from_size,
    labels_name,
    npy_header,
    open_folder,
    reserved_name_problem,
    write_text,
)

INDEX_NAME = "index.csv"
#: Far above any real index (100,000 videos with a kB of labels each make 100 MB), low enough that
#: a file planted in its place cannot fill a reader's memory.
MAX_INDEX_BYTES = 1 << 30
#: The first characters that make a spreadsheet read a cell as a formula (and the quote that
#: marks an escaped cell, so that a value starting with one reads back unchanged).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
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
    #: Frames from one clip's start to the next (64 for the default models); 0 for segment models,
    #: whose clips each cover a share of the video (:meth:`FrameSampler.span_frames`).
    clip_span_frames: int
    #: First source frame of each clip (``k * 64`` for sequential sampling), as the model's sampler
    #: picks it (for segment models: the frame taken from each clip's first segment).
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
        csv.writer(out, lineterminator="\n").writerow(_escape_cell(str(value)) for value in [
            self.relative_id, self.feature_file, "" if self.frames is None else self.frames,
            "" if self.fps is None else repr(float(self.fps)), self.clips,
            "x".join(map(str, self.shape)), self.clip_span_frames,
            " ".join(map(str, self.clip_start_frames)),
            "" if self.labels is None else json.dumps(self.labels, ensure_ascii=False, sort_keys=True),
        ])
        return out.getvalue()

    @classmethod
    def from_csv(cls, values: list[str]) -> IndexRow:
        """The row of one CSV line's cells.

        Raises:
            ValueError: a cell holds no number where one belongs, or malformed JSON labels.
            RecursionError: labels nested deeper than Python's parser goes.
        """
        row = dict(zip(COLUMNS, (_unescape_cell(value) for value in values), strict=True))
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
    sampler: FrameSampler,
    num_clips_per_video: int,
    clip_sampling: str,
    labels: Mapping[str, Any] | None,
) -> IndexRow:
    """The row of one video; clip starts are recomputed with the model's own sampler.

    ``clip_span_frames`` is the sampler's span for this video: a ``target_fps`` model's (X3D)
    depends on its frame rate and is rounded to whole frames (its starts are exact).

    Raises:
        ConfigurationError: ``frames`` would not make the ``shape[0]`` clips the features hold
            (see :func:`frames_fit`).
    """
    starts: tuple[int, ...] = ()
    if frames:
        if not frames_fit(frames, clips=shape[0], sampler=sampler, fps=fps,
                          num_clips_per_video=num_clips_per_video, clip_sampling=clip_sampling):
            raise ConfigurationError(
                f"{relative_id}: {frames!r} frames do not make the {shape[0]} clips of its features."
            )
        clips = sampler.clip_indices(
            frames, fps=fps, num_clips_per_video=num_clips_per_video,
            clip_sampling=clip_sampling,  # type: ignore[arg-type]
        )
        starts = tuple(int(i) for i in clips[:, 0])
    span = round(sampler.span_frames(fps))
    return IndexRow(relative_id, frames, fps, tuple(shape), span, starts, labels)


def frames_fit(
    frames: Any,
    *,
    clips: int,
    sampler: FrameSampler,
    fps: float | None = None,
    num_clips_per_video: int,
    clip_sampling: str,
) -> bool:
    """Whether ``frames`` (``None`` or a count) could have made ``clips`` clips with these settings.

    Checked before the clip starts are computed, which take memory in proportion to the clips: a
    frame count read from a file or from Redis may be anything.
    """
    if frames is None:
        return True
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        return False
    return clips == sampler.num_clips(frames, fps=fps, num_clips_per_video=num_clips_per_video)


def index_path(output_dir: str | os.PathLike[str]) -> Path:
    return Path(output_dir) / INDEX_NAME


def append_row(output_dir: FolderLike, row: IndexRow) -> None:
    """Append ``row`` to the folder's index (the header first in a new file); safe across processes.

    Raises:
        UnsafeFileError: the index is a link, not a regular file, or has other names (hard links).
        OutputError: the index cannot be written.
    """
    with open_folder(output_dir, create=True) as folder:
        header = (",".join(COLUMNS) + "\n").encode()
        folder.append(INDEX_NAME, row.to_csv_line().encode("utf-8"), header=header)


def read_index(output_dir: FolderLike, *, skip_damaged: bool = False) -> dict[str, IndexRow]:
    """``relative_id -> row``, the last row of each video winning; empty without an index.

    Raises:
        UnsafeFileError: the index is a link, not a regular file, or over :data:`MAX_INDEX_BYTES`.
        ConfigurationError: a row does not parse (unless ``skip_damaged``, which leaves it out).
    """
    if not folder_exists(output_dir):
        return {}
    with open_folder(output_dir) as folder:
        data = folder.read_bytes(INDEX_NAME, limit=MAX_INDEX_BYTES)
        where = folder.path / INDEX_NAME
    if data is None:
        return {}
    text = data.decode("utf-8", errors="replace")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a torn last line: its writer died mid-write
    rows: dict[str, IndexRow] = {}
    reader = csv.reader(io.StringIO(text))
    next(reader, None)  # the header
    for values in reader:
        if len(values) != len(COLUMNS):
            continue
        try:
            row = IndexRow.from_csv(values)
        except (ValueError, RecursionError) as e:
            if skip_damaged:
                continue
            raise ConfigurationError(
                f"{where} line {reader.line_num} is damaged ({type(e).__name__}: {str(e)[:200]}). Rebuild "
                f"the index with vfx-status --output_dir {where.parent} --write-index."
            ) from e
        rows[row.relative_id] = row
    return rows


def _escape_cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _unescape_cell(value: str) -> str:
    return value[1:] if value.startswith("'") else value


def rebuild_index(
    output_dir: FolderLike,
    *,
    summaries: Mapping[str, Mapping[str, Any]],
    sampler: FrameSampler,
    num_clips_per_video: int,
    clip_sampling: str,
    feature_shape: tuple[int, int],
) -> list[IndexRow]:
    """Rewrite the index from the valid feature files; return its rows.

    Frames and fps come from the ledger's done ``summaries`` or the old index (its damaged rows
    left out); a file known to neither, or whose frames disagree with its clips, gets empty
    ``frames``/``fps``.
    """
    with open_folder(output_dir, create=True) as folder, folder.locked(INDEX_NAME):
        # Holding the appenders' lock, so no row lands in the file being replaced.
        rows = _rows_from_files(
            folder, summaries=summaries, old=read_index(folder, skip_damaged=True), sampler=sampler,
            num_clips_per_video=num_clips_per_video,
            clip_sampling=clip_sampling, feature_shape=feature_shape,
        )
        text = ",".join(COLUMNS) + "\n" + "".join(row.to_csv_line() for row in rows)
        write_text(folder, INDEX_NAME, text, what="the index")
    return rows


def _rows_from_files(
    folder: Folder,
    *,
    summaries: Mapping[str, Mapping[str, Any]],
    old: Mapping[str, IndexRow],
    sampler: FrameSampler,
    num_clips_per_video: int,
    clip_sampling: str,
    feature_shape: tuple[int, int],
) -> list[IndexRow]:
    rows = []
    header_of, has_labels = _file_facts(folder, feature_shape)
    for relative_id in iter_feature_files(folder):
        header = header_of(relative_id)
        if not features_match(header, n_crops=feature_shape[0], feature_dim=feature_shape[1]):
            continue
        assert header is not None
        summary = summaries.get(relative_id, {})
        previous = old.get(relative_id)
        frames = summary.get("num_frames", previous.frames if previous else None)
        fps = _float_or_none(summary.get("fps", previous.fps if previous else None))
        sampling = {"sampler": sampler, "num_clips_per_video": num_clips_per_video,
                    "clip_sampling": clip_sampling}
        if not frames_fit(frames, clips=header[0][0], fps=fps, **sampling):
            frames, fps = None, None  # the ledger is read from Redis: not trusted to size anything
        rows.append(make_row(
            relative_id, shape=header[0], frames=frames, fps=_float_or_none(fps),
            labels=read_labels(folder, relative_id) if has_labels(relative_id) else None, **sampling,
        ))
    return rows


def _file_facts(
    folder: Folder, feature_shape: tuple[int, int]
) -> tuple[Callable[[str], NpyHeader | None], Callable[[str], bool]]:
    """How to learn a video's header and whether it has labels: from the files on disk; in object
    storage from one listing (sizes for headers: an object is never partial), not 2 requests a video."""
    if folder.can_append:
        return (lambda relative_id: npy_header(folder, relative_id + ".npy")), (lambda relative_id: True)
    listing = folder.listing()

    def header_of(relative_id: str) -> NpyHeader | None:
        info = listing.get(relative_id + ".npy")
        shape = {"n_crops": feature_shape[0], "feature_dim": feature_shape[1]}
        return None if info is None else header_from_size(info.st_size, **shape)

    def has_labels(relative_id: str) -> bool:
        return reserved_name_problem(relative_id) is None and labels_name(relative_id) in listing

    return header_of, has_labels


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
