"""Export speed: ``vfx-export`` of a folder of small feature files, per layout, in files/s and MB/s.

Writes ``--videos`` feature files of ``(--clips, 5, 2048)`` float32 (random numbers, which do not
compress: the worst case for gzip) with a manifest into a temporary folder, then times each
export once from scratch into a fresh destination on the same file system:

* ``per-crop``: five ``(clips, 2048)`` ``.npy`` files per video, each synced and renamed;
* ``video``: one ``(clips, 5, 2048)`` ``.npy`` per video;
* ``hdf5 gzip`` / ``hdf5 none``: one HDF5 file, a dataset per video (``--layout video``).

A second export into the same destination (all files up to date) is timed too: the cost of a
resume that has nothing left to do. MB/s counts the feature bytes written.

Run from the repository root::

    PYTHONPATH=. .venv/bin/python benchmarks/export.py [--videos 1000] [--clips 4] [--dir /path/on/disk]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.outputs.export import ExportReport, export_folder
from vfx_tasks.outputs.export_hdf5 import export_hdf5
from vfx_tasks.outputs.manifest import manifest_for, write_manifest


def make_source(root: Path, *, videos: int, clips: int) -> None:
    """``videos`` files of ``(clips, 5, 2048)`` float32 in 10 subfolders, with a 5-crop manifest."""
    manifest = manifest_for(Recipe(model="i3d", crop_type="5-crop"), pretrained_dir=None)
    write_manifest(root, manifest)
    rng = np.random.default_rng(0)
    for i in range(videos):
        folder = root / f"part{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"video{i:05d}.npy", rng.standard_normal((clips, 5, 2048), dtype=np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: the temp folder)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vfx-export-bench-", dir=args.dir))
    try:
        source = work / "features"
        make_source(source, videos=args.videos, clips=args.clips)
        size_mb = sum(p.stat().st_size for p in source.rglob("*.npy")) / 1e6
        print(f"{args.videos} files of ({args.clips}, 5, 2048) float32, {size_mb:.0f} MB, in {work}")
        print(f"{platform.machine()}, Python {platform.python_version()}")
        cases: dict[str, Callable[[Path], ExportReport]] = {
            "per-crop": lambda dest: export_folder(source, dest, layout="per-crop"),
            "video": lambda dest: export_folder(source, dest, layout="video"),
            "hdf5 gzip": lambda dest: export_hdf5(source, dest.with_suffix(".h5"), compression="gzip",
                                                  layout="video"),
            "hdf5 none": lambda dest: export_hdf5(source, dest.with_suffix(".h5"), compression="none",
                                                  layout="video"),
        }
        print(f"{'layout':<10} {'files out':>9} {'seconds':>8} {'videos/s':>9} {'files/s':>8} {'MB/s':>6}"
              f" {'resume s':>9}")
        for name, run in cases.items():
            dest = work / name.replace(" ", "-")
            started = time.perf_counter()
            report = run(dest)
            seconds = time.perf_counter() - started
            started = time.perf_counter()
            again = run(dest)
            resume = time.perf_counter() - started
            assert again.written == 0, f"{name}: the second export rewrote {again.written} files"
            mb_per_second = report.bytes_written / 1e6 / seconds
            print(f"{name:<10} {report.written:>9} {seconds:>8.2f} {report.videos / seconds:>9.0f} "
                  f"{report.written / seconds:>8.0f} {mb_per_second:>6.0f} {resume:>9.2f}")
            shutil.rmtree(dest, ignore_errors=True)
            dest.with_suffix(".h5").unlink(missing_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
