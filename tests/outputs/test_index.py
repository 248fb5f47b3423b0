"""index.csv: appended under a lock, read back as written, never through a link, safe in a spreadsheet."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from vfx_tasks.errors import ConfigurationError, UnsafeFileError
from vfx_tasks.extract.sampling import FrameSampler
from vfx_tasks.outputs.folder import read_labels
from vfx_tasks.outputs.index import IndexRow, append_row, make_row, read_index, rebuild_index
from vfx_tasks.outputs.manifest import MANIFEST_NAME

#: 32 frames every second one, as both default models take them.
I3D_SAMPLER = FrameSampler(clip_len=32, sampling_rate=2)


def row_of(relative_id: str, *, labels: dict[str, str] | None = None) -> IndexRow:
    return make_row(relative_id, shape=(1, 1, 4), frames=16, fps=25.0, sampler=I3D_SAMPLER,
                    num_clips_per_video=-1, clip_sampling="sequential", labels=labels)


def test_appending_to_an_index_planted_as_a_link_or_a_hard_link_changes_nothing(tmp_path: Path) -> None:
    # Given a shell rc file, and output folders whose index.csv is a link to it, or a hard link,
    rc = tmp_path / "rc"
    rc.write_text("# my shell settings\n")
    linked, hard = tmp_path / "linked", tmp_path / "hard"
    linked.mkdir()
    hard.mkdir()
    (linked / "index.csv").symlink_to(rc)
    os.link(rc, hard / "index.csv")
    row = row_of("x;touch$IFS${HOME}PWNED;#")
    # when a row is appended to each, then both are refused, and the rc file keeps its content.
    with pytest.raises(UnsafeFileError, match="index.csv is a symbolic link"):
        append_row(linked, row)
    with pytest.raises(UnsafeFileError, match=r"index.csv has 2 names \(hard links\)"):
        append_row(hard, row)
    assert rc.read_text() == "# my shell settings\n"



def test_cells_a_spreadsheet_would_run_as_formulas_are_quoted_and_read_back_as_they_were(
    tmp_path: Path,
) -> None:
    # Given videos named like formulas (a Hub file "=HYPERLINK(...).mp4"), and one starting with a quote,
    ids = ['=HYPERLINK("evil.example","open")', "+1", "-2+3", "@SUM(A1)", "'quoted", "dir/=inner", "plain"]
    # when their rows are appended (labels starting like formulas too),
    for relative_id in ids:
        append_row(tmp_path, row_of(relative_id, labels={"=x": "-1"}))
    # then no cell of index.csv starts with =, +, - or @: each such cell starts with a quote,
    cells = list(csv.reader((tmp_path / "index.csv").read_text().splitlines()[1:]))
    assert [row[0] for row in cells] == [
        "'" + ids[0], "'+1", "'-2+3", "'@SUM(A1)", "''quoted", "dir/=inner", "plain",
    ]
    assert all(row[8] == "{\"=x\": \"-1\"}" for row in cells)
    # and reading the index gives back every id, feature file and label as written.
    rows = read_index(tmp_path)
    assert sorted(rows) == sorted(ids)
    for relative_id in ids:
        assert rows[relative_id].feature_file == relative_id + ".npy"
        assert rows[relative_id].labels == {"=x": "-1"}


def test_a_damaged_row_is_an_error_naming_its_line_and_a_rebuild_leaves_it_out(tmp_path: Path) -> None:
    # Given an index whose second row says frames=abc, beside a valid feature file,
    np.save(tmp_path / "a.npy", np.zeros((1, 1, 4), np.float32))
    append_row(tmp_path, row_of("a"))
    with open(tmp_path / "index.csv", "a") as f:
        f.write("b,b.npy,abc,25.0,1,1x1x4,64,0,\n")
    # when it is read, the damage is named with its line and the fix,
    with pytest.raises(ConfigurationError, match=r"index.csv line 3 is damaged .*--write-index"):
        read_index(tmp_path)
    # and rebuilding the index from the files leaves the damaged row out, keeping what it knew of a.
    rows = rebuild_index(tmp_path, summaries={}, sampler=I3D_SAMPLER, num_clips_per_video=-1,
                         clip_sampling="sequential", feature_shape=(1, 4))
    assert [(row.relative_id, row.frames) for row in rows] == [("a", 16)]
    assert sorted(read_index(tmp_path)) == ["a"]


def test_a_rebuild_takes_no_frame_count_from_the_ledger_that_does_not_fit_the_file(tmp_path: Path) -> None:
    # The ledger lives in Redis: a summary of 10**15 frames would ask for terabytes of clip starts.
    np.save(tmp_path / "a.npy", np.zeros((2, 1, 4), np.float32))
    summaries = {"a": {"num_frames": 10**15, "fps": 25.0}}
    rows = rebuild_index(tmp_path, summaries=summaries, sampler=I3D_SAMPLER, num_clips_per_video=-1,
                         clip_sampling="sequential", feature_shape=(1, 4))
    assert [(row.frames, row.fps, row.clip_start_frames) for row in rows] == [(None, None, ())]


def test_the_manifest_is_never_read_as_the_labels_of_a_video_named_like_it(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text('{"schema": 1}')
    np.save(tmp_path / "vfx-run.npy", np.zeros((1, 1, 4), np.float32))  # from before names were reserved
    assert read_labels(tmp_path, "vfx-run") is None
    (tmp_path / "v.json").symlink_to(tmp_path / MANIFEST_NAME)
    with pytest.raises(UnsafeFileError, match="v.json is a symbolic link"):
        read_labels(tmp_path, "v")
