"""Throughput of the whole queue: real Redis, real workers, several ways to keep videos in flight.

For each worker configuration (``--pool`` and ``--concurrency`` of ``vfx-worker``) this starts a
private ``redis-server`` and one worker per visible GPU (one CPU worker without a GPU) through
:class:`vfx_tasks.local.LocalCluster`, warms every worker process up on one video each (model
load, cuDNN autotuning), then times ``vfx-enqueue --wait`` over the same set of videos. The first
configuration is the baseline: every other one reports its ratio to it, and the largest ``rel``
(``shared/golden/README.md``) of its features against the baseline's (exit 1 above 0.01).

Reported per configuration: videos, clip-crops, seconds, clip-crops/s, the ratio to the
baseline, and on CUDA machines with ``pynvml`` the mean GPU utilisation and peak device memory in
use (all workers together).

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
import threading
import time
from pathlib import Path

import numpy as np
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preprocess import SAMPLE_VIDEOS, resolve_video  # noqa: E402
from throughput import SIGMA, ensure_weights, relative_error  # noqa: E402

from vfx_tasks.cli import POOLS, enqueue  # noqa: E402
from vfx_tasks.crops import num_crops  # noqa: E402
from vfx_tasks.local import LocalCluster  # noqa: E402
from vfx_tasks.models import get_model_spec  # noqa: E402
from vfx_tasks.settings import Settings  # noqa: E402


def parse_config(text: str) -> tuple[str, int]:
    pool, _, concurrency = text.partition(":")
    if pool not in POOLS or not concurrency.isdigit() or int(concurrency) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: write POOL:N with POOL one of {', '.join(POOLS)}")
    return pool, int(concurrency)


class DeviceSampler:
    """Mean GPU utilisation and peak memory in use on every visible GPU (pynvml), sampled every 100 ms."""

    def __init__(self) -> None:
        self.utilisation: list[float] = []
        self.peak_memory_mib = 0.0
        self._stop = threading.Event()
        self._handles: list[object] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            indices = [int(i) for i in visible.split(",") if i.strip()] if visible else range(
                pynvml.nvmlDeviceGetCount()
            )
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
        except Exception:  # noqa: BLE001 - no pynvml or no GPU: no figures
            self._handles = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import pynvml

        while not self._stop.wait(0.1):
            self.utilisation.append(
                float(np.mean([pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self._handles]))
            )
            used = sum(pynvml.nvmlDeviceGetMemoryInfo(h).used for h in self._handles) / 2**20
            self.peak_memory_mib = max(self.peak_memory_mib, used)

    def __enter__(self) -> DeviceSampler:
        if self._handles:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._handles:
            self._thread.join()

    def figures(self) -> dict[str, float | None]:
        if not self.utilisation:
            return {"gpu_busy_percent": None, "peak_device_mib": None}
        return {"gpu_busy_percent": float(np.mean(self.utilisation)), "peak_device_mib": self.peak_memory_mib}


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


def run_config(pool: str, concurrency: int, *, settings: Settings, videos: Path, warmup: Path,
               work_dir: Path, options: list[str]) -> tuple[float, dict[str, float | None], Path]:
    output_dir = work_dir / f"{pool}-{concurrency}"
    cluster = LocalCluster(settings, output_dir=output_dir, concurrency=concurrency, pool=pool)
    with cluster:
        # Every process of every worker loads its model before the clock starts.
        enqueue_and_wait(cluster.broker_url, warmup, work_dir / f"warmup-{pool}-{concurrency}", options)
        with DeviceSampler() as sampler:
            started = time.perf_counter()
            enqueue_and_wait(cluster.broker_url, videos, output_dir, options)
            seconds = time.perf_counter() - started
    return seconds, sampler.figures(), output_dir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", type=parse_config, default=[("prefork", 1), ("prefork", 2),
                                                                         ("threads", 2)],
                        help="POOL:CONCURRENCY per worker; the first is the baseline")
    parser.add_argument("--videos", nargs="+", default=list(SAMPLE_VIDEOS))
    parser.add_argument("--copies", type=int, default=2, help="each video is queued this many times")
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
    videos, warmup = work_dir / "videos", work_dir / "warmup"
    videos.mkdir()
    warmup.mkdir()
    sources = [resolve_video(name) for name in args.videos]
    for copy in range(args.copies):
        for source in sources:
            shutil.copy(source, videos / f"{source.stem}-{copy}{source.suffix}")
    max_concurrency = max(concurrency for _, concurrency in args.configs)
    for index in range(max_concurrency):
        shutil.copy(sources[-1], warmup / f"warmup-{index}{sources[-1].suffix}")
    options = ["--model", args.model, "--crop_type", args.crop_type, "--precision", args.precision,
               "--batch_size", str(args.batch_size), "--num_clips_per_video", str(args.num_clips_per_video)]
    spec = get_model_spec(args.model)
    print(f"{len(sources) * args.copies} videos, {args.model} {args.crop_type} {args.precision}, "
          f"device {args.device}, {len(os.sched_getaffinity(0))} CPU cores, work dir {work_dir}",
          file=sys.stderr)

    rows: list[dict[str, object]] = []
    baseline: dict[str, np.ndarray] = {}
    ok = True
    for pool, concurrency in args.configs:
        print(f"running {pool}:{concurrency} ...", file=sys.stderr)
        seconds, device_figures, output_dir = run_config(
            pool, concurrency, settings=settings, videos=videos, warmup=warmup, work_dir=work_dir,
            options=options)
        features = {p.name: np.load(p) for p in sorted(output_dir.glob("*.npy"))}
        baseline = baseline or features
        rel = max(relative_error(features[name], baseline[name], SIGMA[args.model]) for name in baseline)
        ok &= rel <= 0.01
        clip_crops = sum(len(f) for f in features.values()) * num_crops(args.crop_type)  # type: ignore[arg-type]
        rows.append({
            "config": f"{pool}:{concurrency}", "videos": len(features), "clip_crops": clip_crops,
            "seconds": seconds, "clip_crops_per_s": clip_crops / seconds,
            "frames_per_s": clip_crops / num_crops(args.crop_type) * spec.clip_len / seconds,  # type: ignore[arg-type]
            "rel": rel, **device_figures,
        })
    base_seconds = float(rows[0]["seconds"])  # type: ignore[arg-type]
    for row in rows:
        row["ratio"] = base_seconds / float(row["seconds"])  # type: ignore[arg-type]
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    shutil.rmtree(work_dir, ignore_errors=True)
    if not ok:
        print("FEATURES DIFFER FROM THE BASELINE CONFIGURATION", file=sys.stderr)
    return 0 if ok else 1


def format_table(rows: list[dict[str, object]]) -> str:
    header = ("config", "videos", "clip_crops", "seconds", "clip_crops_per_s", "frames_per_s", "ratio", "rel",
              "gpu_busy_percent", "peak_device_mib")
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for row in rows:
        lines.append(" | ".join(
            "-" if row[key] is None else f"{row[key]:.3g}" if isinstance(row[key], float) else str(row[key])
            for key in header
        ))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
