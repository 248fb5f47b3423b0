"""vfx-export: each layout read back equals the source bit for bit, in the manifest's crop order."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import REPO_DIR, wait_until
from tests.outputs.conftest import make_output_folder
from vfx_tasks.cli.export import main
from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.outputs.manifest import manifest_for, read_manifest, write_manifest
from vfx_tasks.storage import TEMP_PREFIX

XD_LIKE = {
    "train/v1_label_A": (3, "train"),
    "train/v2_label_B1-0-0": (5, "train"),
    "test/v3_label_G-0-0": (2, "test"),
}


def export(*args: str) -> object:
    result = CliRunner().invoke(main, list(args))
    return result


def test_per_crop_files_hold_each_crop_in_the_manifest_order(tmp_path: Path) -> None:
    # Given a 5-crop output folder of videos with splits,
    source = tmp_path / "features"
    arrays = make_output_folder(source, videos=XD_LIKE)
    dest, list_file = tmp_path / "exported", tmp_path / "lists" / "test.list"
    # when the test split is exported per crop with a list file,
    result = export(
        str(source), str(dest), "--layout", "per-crop", "--split", "test", "--list", str(list_file)
    )
    # then crop k of each video is <id>__<k>.npy, (clips, D), equal to the source's [:, k, :],
    assert result.exit_code == 0, result.output
    order = read_manifest(dest).settings.facts.crop_order
    assert order == ("top_left", "top_right", "bottom_left", "bottom_right", "center")
    for k in range(len(order)):
        exported = np.load(dest / f"test/v3_label_G-0-0__{k}.npy")
        assert exported.shape == (2, 2048) and exported.dtype == np.float32
        assert exported.tobytes() == arrays["test/v3_label_G-0-0"][:, k, :].tobytes()
    # the train videos are left out, and the list names exactly the files written, in order.
    assert not (dest / "train").exists()
    lines = list_file.read_text().splitlines()
    assert lines == [str(dest / f"test/v3_label_G-0-0__{k}.npy") for k in range(5)]
    assert all(Path(line).is_file() for line in lines)


def test_video_layout_copies_a_split_with_its_labels(tmp_path: Path) -> None:
    source = tmp_path / "features"
    arrays = make_output_folder(source, videos=XD_LIKE)
    dest = tmp_path / "subset"
    result = export(str(source), str(dest), "--layout", "video", "--split", "train")
    assert result.exit_code == 0, result.output
    for relative_id in ("train/v1_label_A", "train/v2_label_B1-0-0"):
        assert np.load(dest / f"{relative_id}.npy").tobytes() == arrays[relative_id].tobytes()
        assert json.loads((dest / f"{relative_id}.json").read_text())["split"] == "train"
    assert not (dest / "test").exists()


def test_hdf5_holds_every_video_with_manifest_and_index_attributes(tmp_path: Path) -> None:
    source = tmp_path / "features"
    arrays = make_output_folder(source, videos={**XD_LIKE, "top": (1, None)}, crop_type="10-crop")
    dest, list_file = tmp_path / "features.h5", tmp_path / "all.list"
    result = export(str(source), str(dest), "--format", "hdf5", "--layout", "video", "--list", str(list_file))
    assert result.exit_code == 0, result.output
    assert not Path(f"{dest}.part").exists()
    with h5py.File(dest, "r") as f:
        manifest = json.loads(f.attrs["vfx_manifest"])
        assert manifest["settings"]["crop_order"][5:] == [
            "flipped_top_left", "flipped_top_right", "flipped_bottom_left", "flipped_bottom_right",
            "flipped_center",
        ]
        for relative_id, array in arrays.items():
            dataset = f[relative_id]
            assert dataset.compression == "gzip" and dataset.chunks is not None
            assert dataset[()].tobytes() == array.tobytes()
            assert dataset.attrs["clips"] == array.shape[0] and dataset.attrs["clip_span_frames"] == 64
        assert json.loads(f["train/v1_label_A"].attrs["labels"])["split"] == "train"
        names = list_file.read_text().splitlines()
        assert names == sorted(arrays) and all(name in f for name in names)


def test_a_folder_without_splits_allows_only_split_all(tmp_path: Path) -> None:
    source = tmp_path / "features"
    make_output_folder(source, videos={"a": (2, None)})
    result = export(str(source), str(tmp_path / "out"), "--split", "train")
    assert result.exit_code == 2
    assert "carry no split" in result.output and "--split all" in result.output


def test_exports_of_other_settings_or_layouts_are_not_mixed(tmp_path: Path) -> None:
    # Given a destination holding a per-crop export of a 5-crop folder,
    source, dest = tmp_path / "features", tmp_path / "exported"
    make_output_folder(source, videos={"a": (2, None)})
    assert export(str(source), str(dest)).exit_code == 0
    # when a center-crop folder, or the same folder in another layout, is exported there,
    center = tmp_path / "center"
    make_output_folder(center, videos={"a": (2, None)}, crop_type="center")
    other_settings = export(str(center), str(dest))
    other_layout = export(str(source), str(dest), "--layout", "video")
    # then both are refused, naming the difference.
    assert other_settings.exit_code == 2 and "crop_type center (source) vs 5-crop" in other_settings.output
    assert other_layout.exit_code == 2 and "--layout per-crop" in other_layout.output


def test_a_source_without_manifest_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "legacy"
    source.mkdir()
    np.save(source / "a.npy", np.zeros((1, 5, 2048), np.float32))
    result = export(str(source), str(tmp_path / "out"))
    assert result.exit_code == 2 and "no vfx-run.json" in result.output


def test_manifest_differences_name_the_settings() -> None:
    fp32 = manifest_for(Recipe(model="i3d"), pretrained_dir=None)
    bf16 = manifest_for(Recipe(model="i3d", clip_sampling="uniform", precision="bf16"), pretrained_dir=None)
    assert set(fp32.differences(bf16)) == {"precision", "clip_sampling"}


@pytest.mark.parametrize("file_format", ["npy", "hdf5"])
def test_a_killed_export_leaves_no_partial_file_and_resumes(tmp_path: Path, file_format: str) -> None:
    # Given a folder big enough that an export takes a few seconds,
    source = tmp_path / "features"
    arrays = make_output_folder(source, videos={f"v{i:04d}": (16, None) for i in range(300)})
    dest = tmp_path / ("features.h5" if file_format == "hdf5" else "exported")
    command = [sys.executable, "-m", "vfx_tasks.cli.export", str(source), str(dest), "--format", file_format]
    # when it is killed with SIGKILL part-way,
    process = subprocess.Popen(command, cwd=REPO_DIR, stderr=subprocess.PIPE)
    if file_format == "hdf5":
        wait_until(lambda: Path(f"{dest}.part").exists(), "the HDF5 part file", timeout=60)
        time.sleep(0.5)
    else:
        wait_until(lambda: len(list(dest.glob("*.npy"))) >= 50, "the first exported files", timeout=60)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # then nothing partial carries a final name: no .h5, every .npy complete,
    if file_format == "hdf5":
        assert not dest.exists()
    else:
        done = list(dest.glob("*.npy"))
        assert 0 < len(done) < 300 * 5, "the export was not interrupted"
        for path in done:
            video, k = path.stem.rsplit("__", 1)
            assert np.load(path).tobytes() == arrays[video][:, int(k), :].tobytes()
    # and a second run completes it, equal to the source bit for bit.
    rerun = subprocess.run(command, cwd=REPO_DIR, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    if file_format == "hdf5":
        with h5py.File(dest, "r") as f:
            for video, array in arrays.items():
                for k in range(5):
                    assert f[f"{video}__{k}"][()].tobytes() == array[:, k, :].tobytes()
    else:
        assert not list(dest.rglob(TEMP_PREFIX + "*"))
        assert "up to date" in rerun.stderr and " 0 up to date" not in rerun.stderr
        for video, array in arrays.items():
            for k in range(5):
                assert np.load(dest / f"{video}__{k}.npy").tobytes() == array[:, k, :].tobytes()


def test_a_finished_export_is_skipped_and_a_changed_source_file_rewritten(tmp_path: Path) -> None:
    source, dest = tmp_path / "features", tmp_path / "exported"
    make_output_folder(source, videos={"a": (2, None), "b": (3, None)})
    assert export(str(source), str(dest), "--layout", "video").exit_code == 0
    replaced = np.ones((4, 5, 2048), np.float32)
    time.sleep(0.01)
    np.save(source / "b.npy", replaced)
    again = CliRunner().invoke(main, [str(source), str(dest), "--layout", "video"])
    assert "1 written, 1 up to date" in again.output
    assert np.load(dest / "b.npy").tobytes() == replaced.tobytes()
    write_manifest(source, read_manifest(source))  # unchanged settings: still the same export
    assert CliRunner().invoke(main, [str(source), str(dest), "--layout", "video"]).exit_code == 0


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")} if folder.exists() else set()


@pytest.mark.parametrize("linked", ["labels", "features", "folder"])
def test_links_in_the_source_are_refused_and_their_targets_never_copied(tmp_path: Path, linked: str) -> None:
    # Given an output folder where someone replaced a file (or a folder) with a link to a secret,
    source, dest, secret = tmp_path / "features", tmp_path / "exported", tmp_path / "secret"
    make_output_folder(source, videos={"train/v1": (2, "train"), "train/v2": (3, "train")})
    secret.mkdir()
    (secret / "v1.json").write_text(json.dumps({"split": "train", "password": "hunter2"}))
    np.save(secret / "v1.npy", np.full((2, 5, 2048), 7, np.float32))
    if linked == "folder":
        shutil.move(source / "train", tmp_path / "moved")
        (source / "train").symlink_to(secret, target_is_directory=True)
    else:
        name = "train/v1.json" if linked == "labels" else "train/v1.npy"
        (source / name).unlink()
        (source / name).symlink_to(secret / Path(name).name)
    # when it is exported with its labels,
    result = export(str(source), str(dest), "--layout", "video")
    # then the export stops with exit 2, naming the link, and nothing of the secret is copied.
    assert result.exit_code == 2, (result.output, result.exception)
    assert "is a symbolic link" in result.output and "train" in result.output
    copied = [p for p in dest.rglob("*") if p.is_file()] if dest.exists() else []
    assert not any(b"hunter2" in p.read_bytes() for p in copied)
    assert not any(p.suffix == ".npy" and np.load(p).flat[0] == 7 for p in copied)


def write_index_rows(source: Path, rows: list[str]) -> None:
    header = "relative_id,feature_file,frames,fps,clips,shape,clip_span_frames,clip_start_frames,labels\n"
    (source / "index.csv").write_text(header + "".join(row + "\n" for row in rows))


def damage(source: Path, how: str) -> list[str]:
    """Damage the folder ``how``; return the export's arguments that meet the damage."""
    if how == "deep labels":
        (source / "a.json").write_text("[" * 100_000 + "]" * 100_000)
        return ["--split", "train"]
    if how == "frames=abc":
        write_index_rows(source, ["a,a.npy,abc,25.0,2,2x5x2048,64,0 64,"])
        return ["--format", "hdf5"]
    if how == "terabyte frames":
        write_index_rows(source, [f"a,a.npy,{10**15},25.0,2,2x5x2048,64,0 64,"])
        return ["--format", "hdf5"]
    if how == "terabyte clips":
        manifest = json.loads((source / "vfx-run.json").read_text())
        manifest["settings"].update(clip_len=10**12, clip_span_frames=2 * 10**12)
        (source / "vfx-run.json").write_text(json.dumps(manifest))
        return ["--format", "hdf5"]
    if how == "file beside folder":
        (source / "a").mkdir()
        np.save(source / "a" / "b.npy", np.zeros((1, 5, 2048), np.float32))
        return ["--format", "hdf5", "--layout", "video"]
    raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "named"),
    [
        ("deep labels", "a.json is not valid JSON labels (nested too deep)"),
        ("frames=abc", "index.csv line 2 is damaged"),
        ("terabyte frames", "index.csv is damaged: a: 1000000000000000 frames do not make the 2 clips"),
        ("terabyte clips", "vfx-run.json is not a vfx_tasks manifest"),
        ("file beside folder", "a.npy and the folder"),
    ],
)
def test_a_damaged_source_ends_in_a_clear_error_and_leaves_nothing(
    tmp_path: Path, how: str, named: str
) -> None:
    # Given a source folder damaged (or crafted) in one way,
    source, dest = tmp_path / "features", tmp_path / "exported"
    make_output_folder(source, videos={"a": (2, "train")})
    args = damage(source, how)
    target = tmp_path / "features.h5" if "hdf5" in args else dest
    # when it is exported,
    result = export(str(source), str(target), *args)
    # then the export stops with a usage error naming the file, without a traceback,
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    assert named in result.output and str(source) in result.output, result.output
    # and leaves nothing behind: no destination, no .part, no temporary file.
    assert list(tmp_path.iterdir()) == [source]
    assert not [name for name in files_under(source) if TEMP_PREFIX in name or name.endswith(".part")]
