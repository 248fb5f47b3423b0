"""Throughput of the whole queue: real Redis, real workers, several ways to keep videos in flight.

For each worker configuration (``--pool`` and ``--concurrency`` of ``vfx-worker``) this starts a
private ``redis-server`` and one worker per visible GPU (one CPU worker without a GPU) through
:class:`vfx_tasks.queue.processes.cluster.LocalCluster`, warms every worker process up on one video
each (model load, cuDNN autotuning), then times ``vfx-enqueue --wait`` over the same set of videos. The first
configuration is the baseline: every other one reports its ratio to it, and the largest ``rel``
(``shared/golden/README.md``) of its features against the baseline's (exit 1 above 0.01).

With ``--repeats R`` the configurations take turns R times and the median time is reported, with
the fastest and slowest run. Reported per configuration: videos, clip-crops, seconds,
clip-crops/s, the ratio to the baseline, and on CUDA machines with ``pynvml`` the mean GPU
utilisation and peak device memory in use (all workers together).

    PYTHONPATH=. .venv/bin/python benchmarks/workers.py --quick
    PYTHONPATH=. .venv/bin/python benchmarks/workers.py --configs prefork:1 prefork:2 threads:2 threads:3 \\
        --crop-type 5-crop --copies 4          # on a GPU box
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from device_sampler import DeviceSampler  # noqa: E402
from preprocess import SAMPLE_VIDEOS, resolve_video  # noqa: E402
from throughput import SIGMA, ensure_weights, relative_error  # noqa: E402

from vfx_tasks.cli import POOLS, enqueue  # noqa: E402
from vfx_tasks.extract.crops import num_crops  # noqa: E402
from vfx_tasks.models import get_model_spec  # noqa: E402
from vfx_tasks.queue.processes.cluster import LocalCluster  # noqa: E402
from vfx_tasks.settings import Settings  # noqa: E402


def parse_config(text: str) -> tuple[str, int]:
    pool, _, concurrency = text.partition(":")
    if pool not in POOLS or not concurrency.isdigit() or int(concurrency) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: write POOL:N with POOL one of {', '.join(POOLS)}")
    return pool, int(concurrency)


def enqueue_and_wait(broker_url: str, videos: Path, output_dir: Path, options: list[str]) -> None:
    result = CliRunner().invoke(
        enqueue.main,
        ["--input_dir", str(videos), "--output_dir", str(output_dir), "--wait", "--poll_seconds", "0.1",
         *options],
        env={"VFX_BROKER_URL": broker_url},
        catch_exceptions=False,
    )
    if result.exit_code != 0:
        sys.exit(f"vfx-enqueue exited with {result.exit_code}:\n{result.stderr}")


def run_config(pool: str, concurrency: int, *, settings: Settings, videos: Path, warmup_video: Path,
               work_dir: Path, options: list[str]) -> tuple[float, dict[str, float | None], Path]:
    output_dir = work_dir / f"{pool}-{concurrency}"
    cluster = LocalCluster(settings, output_dir=output_dir, concurrency=concurrency, pool=pool)
    with cluster:
        # Every process of every worker (one per GPU) loads its model before the clock starts.
        warmup = work_dir / f"warmup-{pool}-{concurrency}"
        warmup.mkdir(parents=True)
        for index in range(concurrency * len(cluster.workers)):
            shutil.copy(warmup_video, warmup / f"warmup-{index}{warmup_video.suffix}")
        enqueue_and_wait(cluster.broker_url, warmup, work_dir / f"{warmup.name}-features", options)
        with DeviceSampler() as sampler:
            started = time.perf_counter()
            enqueue_and_wait(cluster.broker_url, videos, output_dir, options)
            seconds = time.perf_counter() - started
    figures = {"gpu_busy_percent": sampler.busy_percent, "peak_device_mib": sampler.peak_used_mib}
    return seconds, figures, output_dir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", type=parse_config, default=[("prefork", 1), ("prefork", 2),
                                                                         ("threads", 2)],
                        help="POOL:CONCURRENCY per worker; the first is the baseline")
    parser.add_argument("--videos", nargs="+", default=list(SAMPLE_VIDEOS))
    parser.add_argument("--copies", type=int, default=2, help="each video is queued this many times")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs of each configuration, taking turns; the median is reported")
    parser.add_argument("--model", default="i3d", choices=sorted(SIGMA))
    parser.add_argument("--crop-type", default="center")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-clips-per-video", type=int, default=-1)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--pretrained-dir", type=Path)
    parser.add_argument("--quick", action="store_true", help="carphone + bikes, one copy, first 2 clips")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.videos, args.copies, args.num_clips_per_video = ["carphone_pristine.mp4", "bikes.mp4"], 1, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    weights = ensure_weights(args.pretrained_dir, [args.model])
    settings = Settings.from_env(device=args.device, pretrained_dir=weights)
    work_dir = Path(tempfile.mkdtemp(prefix="vfx-bench-workers-"))
    videos = work_dir / "videos"
    videos.mkdir()
    sources = [resolve_video(name) for name in args.videos]
    for copy in range(args.copies):
        for source in sources:
            shutil.copy(source, videos / f"{source.stem}-{copy}{source.suffix}")
    options = ["--model", args.model, "--crop_type", args.crop_type, "--precision", args.precision,
               "--batch_size", str(args.batch_size), "--num_clips_per_video", str(args.num_clips_per_video)]
    spec = get_model_spec(args.model)
    print(f"{len(sources) * args.copies} videos, {args.model} {args.crop_type} {args.precision}, "
          f"device {args.device}, {len(os.sched_getaffinity(0))} CPU cores, work dir {work_dir}",
          file=sys.stderr)

    runs: dict[tuple[str, int], list[float]] = {config: [] for config in args.configs}
    figures: dict[tuple[str, int], dict[str, object]] = {}
    baseline: dict[str, np.ndarray] = {}
    ok = True
    # Configurations take turns, repeat after repeat, so that a slow spell of a shared machine
    # does not land on one configuration only.
    for repeat in range(args.repeats):
        for pool, concurrency in args.configs:
            print(f"repeat {repeat + 1}/{args.repeats}: {pool}:{concurrency} ...", file=sys.stderr)
            seconds, device_figures, output_dir = run_config(
                pool, concurrency, settings=settings, videos=videos, warmup_video=sources[-1],
                work_dir=work_dir / f"repeat-{repeat}", options=options)
            features = {p.name: np.load(p) for p in sorted(output_dir.glob("*.npy"))}
            baseline = baseline or features
            rel = max(relative_error(features[name], baseline[name], SIGMA[args.model]) for name in baseline)
            ok &= rel <= 0.01
            runs[(pool, concurrency)].append(seconds)
            clip_crops = sum(len(f) for f in features.values()) * num_crops(args.crop_type)  # type: ignore[arg-type]
            previous = figures.get((pool, concurrency), {})
            figures[(pool, concurrency)] = {
                "videos": len(features), "clip_crops": clip_crops,
                "rel": max(rel, float(previous.get("rel", 0.0))),  # type: ignore[arg-type]
                **device_figures,
            }
    base_seconds = float(np.median(runs[args.configs[0]]))
    rows: list[dict[str, object]] = []
    for config in args.configs:
        seconds = float(np.median(runs[config]))
        clip_crops = int(figures[config]["clip_crops"])  # type: ignore[call-overload]
        rows.append({
            "config": f"{config[0]}:{config[1]}", **figures[config], "seconds": seconds,
            "spread": f"{min(runs[config]):.3g}-{max(runs[config]):.3g}",
            "clip_crops_per_s": clip_crops / seconds,
            "frames_per_s": clip_crops / num_crops(args.crop_type) * spec.clip_len / seconds,  # type: ignore[arg-type]
            "ratio": base_seconds / seconds, "runs": runs[config],
        })
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    shutil.rmtree(work_dir, ignore_errors=True)
    if not ok:
        print("FEATURES DIFFER FROM THE BASELINE CONFIGURATION", file=sys.stderr)
    return 0 if ok else 1


def format_table(rows: list[dict[str, object]]) -> str:
    header = ("config", "videos", "clip_crops", "seconds", "spread", "clip_crops_per_s", "frames_per_s",
              "ratio", "rel", "gpu_busy_percent", "peak_device_mib")
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for row in rows:
        lines.append(" | ".join(
            "-" if row[key] is None else f"{row[key]:.3g}" if isinstance(row[key], float) else str(row[key])
            for key in header
        ))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
