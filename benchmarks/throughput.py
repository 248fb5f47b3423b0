"""End-to-end throughput: the original tool's sequential pipeline against ours, same run.

For each model and crop type, over the same videos:

* **naive**: what the original tool does, one stage after the other with nothing overlapping:
  decode a batch of clips on the CPU (every clip's frames, duplicates included), resize and crop
  in float32 on the CPU, copy to the device, run the backbone, pool.
* **ours**: :meth:`vfx_tasks.FeatureExtractor.extract`: a decode thread keeps the next batch
  ready while the backbone runs; uint8 frames go to the device and are resized, cropped and
  normalised there; ``videos_in_flight`` videos share one loaded model, each with its own batches.
* **batched** (what a worker runs): a :class:`~vfx_tasks.extract.batching.BatchingLoop`, one
  inference loop batching the clip-crops of ``videos_in_flight`` videos, decoded by up to one
  thread per core.

Reported: clip-crops/s, sampled frames/s, the ratio ours / naive, peak host RSS, peak device
memory and mean GPU utilisation (CUDA only, when ``pynvml`` is installed). Every run's features
are checked against the naive fp32 features (``rel`` of ``shared/golden/README.md``; 0.01 for
fp32 and fp16, 0.05 for bf16); the script exits 1 if one is out of tolerance.

Run from the repository root (stand-in weights are generated when ``--pretrained-dir`` lacks the
checkpoints)::

    PYTHONPATH=. .venv/bin/python benchmarks/throughput.py --quick
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from device_sampler import DeviceSampler  # noqa: E402
from preprocess import SAMPLE_VIDEOS, resolve_video, run_naive  # noqa: E402

from vfx_tasks import FeatureExtractor  # noqa: E402
from vfx_tasks.errors import CheckpointNotFoundError  # noqa: E402
from vfx_tasks.extract.batching import BatchingLoop, loop_shape  # noqa: E402
from vfx_tasks.extract.crops import num_crops  # noqa: E402
from vfx_tasks.models import get_model_spec  # noqa: E402
from vfx_tasks.models.files import checkpoint_path  # noqa: E402
from vfx_tasks.models.standin_checkpoint import write_standin_checkpoint  # noqa: E402

#: Spread of reference features per model (``shared/golden/README.md``), to make ``rel`` unitless.
SIGMA = {"i3d": 3.6863, "swin-t": 10.679}
TOLERANCE = {"fp32": 0.01, "fp16": 0.01, "bf16": 0.05}


def run_naive_video(extractor: FeatureExtractor, video: Path, *, crop_type: str, batch_size: int,
                    num_clips: int, decoder: str = "decord") -> np.ndarray:
    """The original tool's order: CPU float preprocessing, then the backbone, strictly in turn."""
    batches = []
    for model_input in run_naive(video, spec=extractor.spec, crop_type=crop_type,  # type: ignore[arg-type]
                                 batch_size=batch_size, num_clips_per_video=num_clips, decoder=decoder):
        batches.append(extractor.embed(model_input.to(extractor.device)).cpu().numpy())
    return np.concatenate(batches)


def run_naive_videos(extractor: FeatureExtractor, videos: list[Path], *, crop_type: str, batch_size: int,
                     num_clips: int, decoder: str = "decord") -> list[np.ndarray]:
    return [run_naive_video(extractor, video, crop_type=crop_type, batch_size=batch_size, num_clips=num_clips,
                            decoder=decoder)
            for video in videos]


def run_ours_videos(extractor: FeatureExtractor, videos: list[Path], *, crop_type: str, batch_size: int,
                    num_clips: int, videos_in_flight: int, decoder: str = "decord") -> list[np.ndarray]:
    def one(video: Path) -> np.ndarray:
        return extractor.extract(video, crop_type=crop_type, batch_size=batch_size,  # type: ignore[arg-type]
                                 num_clips_per_video=num_clips, decoder=decoder).features  # type: ignore[arg-type]

    if videos_in_flight == 1:
        return [one(video) for video in videos]
    with ThreadPoolExecutor(max_workers=videos_in_flight) as pool:
        return list(pool.map(one, videos))


def run_batched_videos(extractor: FeatureExtractor, videos: list[Path], *, crop_type: str, batch_size: int,
                       num_clips: int, videos_in_flight: int, decoder: str = "decord") -> list[np.ndarray]:
    decoders = min(videos_in_flight, len(os.sched_getaffinity(0)))
    batch_clip_crops, inference_threads = loop_shape(extractor.device, batch_size=batch_size,
                                                     crop_type=crop_type, decoders=decoders)  # type: ignore[arg-type]
    loop = BatchingLoop(extractor, batch_clip_crops=batch_clip_crops, decoders=decoders,
                        inference_threads=inference_threads)

    def one(video: Path) -> np.ndarray:
        return loop.extract(video, crop_type=crop_type, num_clips_per_video=num_clips,  # type: ignore[arg-type]
                            decoder=decoder, decoder_threads=1).features  # type: ignore[arg-type]

    try:
        with ThreadPoolExecutor(max_workers=videos_in_flight) as pool:
            return list(pool.map(one, videos))
    finally:
        loop.close()


PATHS = {"ours": run_ours_videos, "batched": run_batched_videos}


def measure(work: Callable[[], list[np.ndarray]], device: torch.device
            ) -> tuple[list[np.ndarray], dict[str, float | None]]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    with DeviceSampler(device.index or 0, enabled=device.type == "cuda") as sampler:
        started = time.perf_counter()
        result = work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
    stats: dict[str, float | None] = {
        "seconds": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_device_mib": (
            torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        ),
        "gpu_busy_percent": sampler.busy_percent,
        # NVML's view: the whole process (CUDA context and cuDNN workspaces too) and any other.
        "peak_nvml_mib": sampler.peak_used_mib,
    }
    return result, stats


def relative_error(ours: np.ndarray, reference: np.ndarray, sigma: float) -> float:
    return float(np.sqrt(np.mean(np.sum((ours - reference) ** 2, axis=-1))) / sigma)


def ensure_weights(pretrained_dir: Path | None, models: list[str]) -> Path:
    # Stand-in weights are reused between runs rather than written (140 MB each) every time.
    folder = pretrained_dir or Path(tempfile.gettempdir()) / "vfx-bench-standin-weights"
    for name in models:
        spec = get_model_spec(name)
        try:
            checkpoint_path(spec, folder)
        except CheckpointNotFoundError:
            print(f"writing stand-in weights for {name} in {folder}", file=sys.stderr)
            write_standin_checkpoint(spec, folder)
    return folder


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", nargs="+", default=list(SAMPLE_VIDEOS))
    parser.add_argument("--models", nargs="+", default=["i3d", "swin-t"], choices=sorted(SIGMA))
    parser.add_argument("--crop-types", nargs="+", default=["center", "5-crop"])
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=sorted(TOLERANCE))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-clips-per-video", type=int, default=2,
                        help="first N clips of each video (-1: all of them)")
    parser.add_argument("--videos-in-flight", type=int, nargs="+", default=[1],
                        help="videos sharing one model at once (threads); several values compare them")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS),
                        help="our architectures to time against naive")
    parser.add_argument("--decoders", nargs="+", default=["decord"], choices=["decord", "pyav"],
                        help="video decoders of our paths (naive always reads with decord)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pretrained-dir", type=Path)
    parser.add_argument("--quick", action="store_true", help="I3D only, center crop, carphone + bikes")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.crop_types = ["i3d"], ["center"]
        args.videos = ["carphone_pristine.mp4", "bikes.mp4"]
    return args


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    weights = ensure_weights(args.pretrained_dir, args.models)
    videos = [resolve_video(name) for name in args.videos]
    options = {"batch_size": args.batch_size, "num_clips": args.num_clips_per_video}
    rows: list[dict[str, object]] = []
    ok = True
    for model in args.models:
        extractors = {
            p: FeatureExtractor(model, pretrained_dir=weights, device=args.device, precision=p)
            for p in args.precisions
        }
        naive_extractor = FeatureExtractor(model, pretrained_dir=weights, device=args.device)
        device = naive_extractor.device
        print(f"{model} on {device} ({describe_device(device)}), torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads", file=sys.stderr)
        for crop_type in args.crop_types:
            # Warm up both paths once (lazy initialisation, cuDNN autotuning) before timing.
            run_naive_video(naive_extractor, videos[0], crop_type=crop_type, batch_size=args.batch_size,
                            num_clips=1)
            run_ours_videos(naive_extractor, videos[:1], crop_type=crop_type, batch_size=args.batch_size,
                            num_clips=1, videos_in_flight=1)
            naive, naive_stats = measure(partial(run_naive_videos, naive_extractor, videos,
                                                 crop_type=crop_type, **options), device)
            num_clips = sum(len(features) for features in naive)
            clip_crops = num_clips * num_crops(crop_type)
            sampled_frames = num_clips * naive_extractor.spec.clip_len
            cell = {"model": model, "crop": crop_type}
            naive_labels = {"path": "naive", "decoder": "decord", "precision": "fp32", "in_flight": 1,
                            "rel": 0.0}
            rows.append(summarise(cell | naive_labels, naive_stats, clip_crops, sampled_frames, naive_stats))
            for precision, extractor in extractors.items():
                for in_flight, path, decoder in itertools.product(args.videos_in_flight, args.paths,
                                                                  args.decoders):
                    work = partial(PATHS[path], extractor, videos, crop_type=crop_type,
                                   videos_in_flight=in_flight, decoder=decoder, **options)
                    ours, stats = measure(work, device)
                    pairs = zip(ours, naive, strict=True)
                    rel = max(relative_error(o, n, SIGMA[model]) for o, n in pairs)
                    ok &= rel <= TOLERANCE[precision]
                    labels = {"path": path, "decoder": decoder, "precision": precision,
                              "in_flight": in_flight, "rel": rel}
                    rows.append(summarise(cell | labels, stats, clip_crops, sampled_frames, naive_stats))
    print(format_table(rows))
    ours_rows = [r for r in rows if r["path"] == "ours" and r["precision"] == "fp32" and r["in_flight"] == 1]
    if ours_rows:
        overall = float(np.exp(np.mean([np.log(float(r["ratio"])) for r in ours_rows])))  # type: ignore[arg-type]
        print(f"overall end-to-end ratio (ours fp32 / naive): {overall:.2f}x "
              f"(geometric mean over {len(ours_rows)} cells)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if not ok:
        print("FEATURES OUT OF TOLERANCE", file=sys.stderr)
    return 0 if ok else 1


def summarise(labels: dict[str, object], stats: dict[str, float | None], clip_crops: int,
              sampled_frames: int, baseline: dict[str, float | None]) -> dict[str, object]:
    seconds = float(stats["seconds"])  # type: ignore[arg-type]
    return labels | stats | {
        "clip_crops_per_s": clip_crops / seconds,
        "frames_per_s": sampled_frames / seconds,
        "ratio": float(baseline["seconds"]) / seconds,  # type: ignore[arg-type]
    }


def format_table(rows: list[dict[str, object]]) -> str:
    header = ("model", "crop", "path", "decoder", "precision", "in_flight", "clip_crops_per_s",
              "frames_per_s", "ratio", "rel", "peak_rss_mib", "peak_device_mib", "gpu_busy_percent")
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for row in rows:
        cells = []
        for key in header:
            value = row[key]
            cells.append("-" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value))
        lines.append(" | ".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
