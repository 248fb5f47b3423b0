"""Output naming, atomic writes and the validity check of existing outputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vfx_tasks.errors import OutputError, UnsafeFileError
from vfx_tasks.storage import (
    LocalFolder,
    find_temp_files,
    is_valid_output,
    npy_header,
    output_path,
    read_npy_header,
    remove_temp_files,
    remove_temp_files_of,
    write_features,
    write_features_atomic,
    write_json,
)


def test_output_path_keeps_relative_dir_and_adds_npy(tmp_path: Path) -> None:
    assert output_path(tmp_path, "a/b/video.1") == tmp_path / "a" / "b" / "video.1.npy"
    assert output_path(tmp_path, "top") == tmp_path / "top.npy"


@pytest.mark.parametrize("bad", ["../escape", "/abs/path", "a/../../b"])
def test_output_path_rejects_ids_leaving_the_output_dir(tmp_path: Path, bad: str) -> None:
    with pytest.raises(OutputError, match="inside the output folder"):
        output_path(tmp_path, bad)


def test_atomic_write_round_trips_and_leaves_no_temp_file(tmp_path: Path) -> None:
    features = np.random.default_rng(0).standard_normal((4, 5, 2048)).astype(np.float32)
    path = tmp_path / "x" / "y" / "v.npy"
    write_features_atomic(path, features)
    np.testing.assert_array_equal(np.load(path), features)
    assert find_temp_files(tmp_path) == []
    # A second (duplicate) write replaces the file with the same bytes.
    before = path.read_bytes()
    write_features_atomic(path, features)
    assert path.read_bytes() == before


def test_failed_write_removes_its_temp_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OutputError, match="Cannot write"):
        write_features_atomic(blocker / "v.npy", np.zeros((1, 1, 4), np.float32))
    assert find_temp_files(tmp_path) == []


def test_validity_needs_full_file_right_shape_and_dtype(tmp_path: Path) -> None:
    good = tmp_path / "good.npy"
    write_features_atomic(good, np.zeros((3, 5, 2048), np.float32))
    assert read_npy_header(good) == ((3, 5, 2048), np.dtype(np.float32))
    assert is_valid_output(good, n_crops=5, feature_dim=2048)
    assert is_valid_output(good, n_crops=5, feature_dim=2048, num_clips_per_video=3)
    assert not is_valid_output(good, n_crops=5, feature_dim=2048, num_clips_per_video=4)
    assert not is_valid_output(good, n_crops=1, feature_dim=2048)
    assert not is_valid_output(good, n_crops=5, feature_dim=768)

    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(good.read_bytes()[:-10])
    assert not is_valid_output(truncated, n_crops=5, feature_dim=2048)

    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    assert not is_valid_output(empty, n_crops=5, feature_dim=2048)

    float64 = tmp_path / "float64.npy"
    np.save(float64, np.zeros((3, 5, 2048)))
    assert not is_valid_output(float64, n_crops=5, feature_dim=2048)
    assert not is_valid_output(tmp_path / "missing.npy", n_crops=5, feature_dim=2048)


def test_remove_temp_files_finds_leftovers_of_killed_writers(tmp_path: Path) -> None:
    leftover = tmp_path / "a" / ".vfx-tmp-v.abc123.npy.part"
    leftover.parent.mkdir()
    leftover.write_bytes(b"partial")
    (tmp_path / "a" / "v.npy").write_bytes(b"keep")
    assert find_temp_files(tmp_path) == [leftover]
    assert remove_temp_files(tmp_path) == 1
    assert not leftover.exists() and (tmp_path / "a" / "v.npy").exists()


def test_remove_temp_files_also_removes_labels_leftovers(tmp_path: Path) -> None:
    # Given a writer killed while writing the labels (they go first, before the features),
    labels_leftover = tmp_path / "a" / ".vfx-tmp-v.def456.json.part"
    labels_leftover.parent.mkdir()
    labels_leftover.write_text('{"partial": ')
    (tmp_path / "a" / "v.json").write_text("{}")
    # then its temporary file is found and removed like a features leftover, and nothing else is.
    assert find_temp_files(tmp_path) == [labels_leftover]
    assert remove_temp_files(tmp_path) == 1
    assert not labels_leftover.exists() and (tmp_path / "a" / "v.json").exists()


def test_remove_temp_files_also_removes_text_leftovers(tmp_path: Path) -> None:
    # Given a rebuild of the index killed mid-write (write_text_atomic's temporary file),
    leftover = tmp_path / ".vfx-tmp-index.x1.txt.part"
    leftover.write_text("relative_id,feature_file\n")
    # then it is found and removed like the others.
    assert find_temp_files(tmp_path) == [leftover]
    assert remove_temp_files(tmp_path) == 1 and not leftover.exists()


def test_the_temp_files_of_one_video_are_removed_and_no_others(tmp_path: Path) -> None:
    folder = tmp_path / "a"
    folder.mkdir()
    mine = [folder / ".vfx-tmp-v2.k3j_x.npy.part", folder / ".vfx-tmp-v2.q9.json.part"]
    others = [folder / ".vfx-tmp-v20.zz.npy.part", folder / "v2.npy", tmp_path / ".vfx-tmp-v2.up.npy.part"]
    for path in mine + others:
        path.write_bytes(b"x")
    assert sorted(remove_temp_files_of(tmp_path, "a/v2")) == sorted(mine)
    assert [path for path in mine + others if path.exists()] == others


# -- links, special files and sizes: what whoever can write inside an output folder may plant ------


def test_a_folder_swapped_for_a_link_after_the_folder_was_opened_is_not_written_through(
    tmp_path: Path,
) -> None:
    # Given an output folder opened from its root, with a sub-folder in it,
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "out" / "sub").mkdir(parents=True)
    outside.mkdir()
    with LocalFolder.open_under(root / "out", [root]) as folder:
        # when the sub-folder becomes a link out of the root before the write,
        (root / "out" / "sub").rename(root / "out" / "moved")
        (root / "out" / "sub").symlink_to(outside, target_is_directory=True)
        # then writing there is refused, and nothing lands outside.
        with pytest.raises(UnsafeFileError, match="sub is a symbolic link"):
            write_features(folder, "sub/evil.npy", np.zeros((1, 1, 4), np.float32))
        with pytest.raises(UnsafeFileError, match="sub is a symbolic link"):
            write_json(folder, "sub/evil.json", {"a": 1})
    assert list(outside.iterdir()) == []


def test_the_output_folder_itself_is_walked_down_from_its_root_without_links(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "real" / "out").mkdir(parents=True)
    outside.mkdir()
    (root / "inside-link").symlink_to(root / "real", target_is_directory=True)
    # A link that resolves inside the root is the folder it leads to,
    with LocalFolder.open_under(root / "inside-link" / "out", [root]) as folder:
        assert folder.path == root / "real" / "out"
    # a missing folder is made, one folder at a time,
    with LocalFolder.open_under(root / "new" / "deep", [root]) as folder:
        write_features(folder, "v.npy", np.zeros((1, 1, 4), np.float32))
    assert (root / "new" / "deep" / "v.npy").is_file()
    # and a folder outside every root is refused.
    (root / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeFileError, match="is not under any of"):
        LocalFolder.open_under(root / "escape" / "out", [root])


def test_reads_are_bounded_and_links_at_a_final_name_are_replaced_not_followed(tmp_path: Path) -> None:
    folder_path, outside = tmp_path / "out", tmp_path / "outside.json"
    folder_path.mkdir()
    outside.write_text('{"keep": true}')
    (folder_path / "big.json").write_bytes(b"{}" + b" " * 100)
    (folder_path / "v.json").symlink_to(outside)
    with LocalFolder.open(folder_path) as folder:
        with pytest.raises(UnsafeFileError, match="holds 102 bytes, more than the 100"):
            folder.read_bytes("big.json", limit=100)
        with pytest.raises(UnsafeFileError, match="v.json is a symbolic link"):
            folder.read_bytes("v.json", limit=100)
        assert folder.read_bytes("missing/x.json", limit=100) is None
        write_json(folder, "v.json", {"new": 1})
    assert outside.read_text() == '{"keep": true}'
    assert not (folder_path / "v.json").is_symlink()
    assert npy_header(LocalFolder.open(folder_path), "v.json") is None


def test_the_temp_files_of_a_video_spare_those_of_a_video_named_like_it_with_a_dot(tmp_path: Path) -> None:
    # ".vfx-tmp-a.b.x1y2z3w4.npy.part" belongs to video "a.b", not to video "a".
    others = tmp_path / ".vfx-tmp-a.b.x1y2z3w4.npy.part"
    mine = tmp_path / ".vfx-tmp-a.k9m8n7p6.npy.part"
    others.write_bytes(b"in flight")
    mine.write_bytes(b"left by a dead attempt")
    assert remove_temp_files_of(tmp_path, "a") == [mine]
    assert others.exists()


def test_temp_files_are_found_without_following_links_out_of_the_folder(tmp_path: Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / ".vfx-tmp-v.abcdefgh.npy.part").write_bytes(b"not ours")
    (out / "elsewhere").symlink_to(outside, target_is_directory=True)
    assert find_temp_files(out) == [] and remove_temp_files(out) == 0
    assert (outside / ".vfx-tmp-v.abcdefgh.npy.part").exists()


def test_a_fifo_where_a_file_is_appended_or_written_whole_is_refused_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "index.csv")
    with LocalFolder.open(tmp_path) as folder:
        with pytest.raises(UnsafeFileError, match="index.csv is not a regular file"):
            folder.check_appendable("index.csv")
        with pytest.raises(UnsafeFileError, match="index.csv is not a regular file"):
            folder.append("index.csv", b"row\n")
        with pytest.raises(UnsafeFileError, match="index.csv is not a regular file"):
            os.close(folder.open_writable("index.csv"))
