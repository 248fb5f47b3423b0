"""The supply side of extraction: how fast decoding and preprocessing feed a backbone.

The pipeline runs as it does in a worker, but with a **null backbone**, a pooling stub with the
backbone's output shape, so the numbers are the CPU's on any machine. Two architectures:

* **batched** (the worker's): a :class:`~vfx_tasks.extract.batching.BatchingLoop` fed by
  ``--decoders`` threads (default: one per core, one FFmpeg thread each) with ``--in-flight``
  videos at once, batches of clip-crops cut across videos;
* **per-video** (before it): :meth:`vfx_tasks.FeatureExtractor.extract`, one video at a time,
  its decode thread keeping the next batch ready, batches never spanning videos. Per generated
H.264 video (360p, 480p, 720p; libx264 preset fast, written with PyAV) and crop type
(``center``, ``5-crop``) it reports:

* video frames/s (every frame of the span is decoded, the ones clips skip too) and
  clip-crops/s (what the GPU would receive);
* the **decode ceiling**: decord ``get_batch`` over every frame of the same video, one process
  per core, frames/s summed; supply is the pipeline's frames/s as a share of it;
* over a **mixed run** of 21 videos of several lengths and sizes (center crops), both
  architectures: supply against the ceiling (the time the ceiling would need for the same
  frames over the time taken) and the **batch fill**, clip-crops per forward over the batch's
  capacity (``batch_size x n_crops``), the run's last, short batches included (with 10 s videos,
  ``--quick``, the run is only a few batches long and they weigh more).

Each number is the best of ``--repeats`` passes. The pipeline converts to RGB only the frames
clips use (every second one for a 32x2 clip) and the ceiling every frame, so a cheap cell
(center crops of a small video) can exceed 100%.

It ends with the per-core figure a GPU box can be sized from. Run from the repository root
(``pip install av`` for the encoder; the videos are cached in ``--workdir``)::

    PYTHONPATH=. .venv/bin/python benchmarks/supply.py            # 60 s videos; ~6 min to write them once
    PYTHONPATH=. .venv/bin/python benchmarks/supply.py --quick    # 10 s videos, under 3 minutes

The last line reads ``supply: NN% of the decode ceiling, batch fill NN%`` (the mixed run).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

from vfx_tasks.extract.batching import BatchingLoop
from vfx_tasks.extract.crops import num_crops

sys.path.insert(0, str(Path(__file__).resolve().parent))
from videos import write_h264  # noqa: E402

#: Name -> (width, height).
RESOLUTIONS = {"360p": (640, 360), "480p": (854, 480), "720p": (1280, 720)}
CROP_TYPES = ("center", "5-crop")
FPS = 25
#: The mixed run: (resolution, seconds at ``--seconds 10``; scaled with it), three times over.
MIXED = [("480p", 3), ("360p", 7), ("720p", 5), ("480p", 14), ("360p", 2), ("720p", 9), ("480p", 4)]
MIXED_REPEATS = 3


class NullBackbone(nn.Module):
    """Average-pools ``(N, C, T, H, W)`` to the backbone's ``(N, D, 1, 1, 1)``; counts its calls."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.calls = 0
        self.inputs = 0

    def forward(self, clips_ncthw: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.inputs += clips_ncthw.shape[0]
        pooled = clips_ncthw.mean(dim=(2, 3, 4), keepdim=True)  # (N, C, 1, 1, 1)
        repeats = -(-self.feature_dim // pooled.shape[1])
        return pooled.repeat(1, repeats, 1, 1, 1)[:, : self.feature_dim]


def _decode_all(path: str) -> tuple[int, float]:
    """In a worker process: decord ``get_batch`` over every frame, one thread; (frames, seconds)."""
    import decord

    started = time.perf_counter()
    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    num_frames = len(reader)
    for start in range(0, num_frames, 64):
        reader.get_batch(list(range(start, min(start + 64, num_frames)))).asnumpy()
    return num_frames, time.perf_counter() - started


def decode_ceiling(path: Path, *, processes: int, repeats: int) -> float:
    """Frames/s of the whole machine decoding ``path``: one process per core, each the whole
    video; the best of ``repeats`` passes after a warm-up (imports, page cache)."""
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_decode_all, [str(path)] * processes)
        passes = [pool.map(_decode_all, [str(path)] * processes) for _ in range(repeats)]
    return max(sum(frames / seconds for frames, seconds in results) for results in passes)


def null_extractor(pretrained_dir: Path):
    """I3D's :class:`FeatureExtractor` on the CPU with its backbone swapped for the stub."""
    from vfx_tasks import FeatureExtractor

    extractor = FeatureExtractor("i3d", pretrained_dir=pretrained_dir, device="cpu")
    extractor.backbone = NullBackbone(extractor.spec.feature_dim)
    return extractor


def supply_run(extractor, videos: list[Path], *, crop_type: str, args: argparse.Namespace,
               batched: bool = True) -> dict:
    """Extract ``videos`` with either architecture; frames, clip-crops, forwards and seconds."""
    backbone = extractor.backbone
    backbone.calls = backbone.inputs = 0
    crops = num_crops(crop_type)
    started = time.perf_counter()
    if batched:
        loop = BatchingLoop(extractor, batch_clip_crops=args.batch_size * crops, decoders=args.decoders)
        with ThreadPoolExecutor(args.in_flight) as videos_in_flight:
            results = list(videos_in_flight.map(
                lambda video: loop.extract(video, crop_type=crop_type, decoder=args.decoder,
                                           decoder_threads=args.decoder_threads), videos))
        loop.close()
    else:
        results = [extractor.extract(video, crop_type=crop_type, batch_size=args.batch_size,
                                     decoder=args.decoder) for video in videos]
    seconds = time.perf_counter() - started
    frames = sum(result.num_frames for result in results)
    clips = sum(result.shape[0] for result in results)
    return {"architecture": "batched" if batched else "per-video", "frames": frames, "clips": clips,
            "clip_crops": clips * crops, "forwards": backbone.calls, "seconds": seconds,
            "frames_per_s": frames / seconds, "clip_crops_per_s": clips * crops / seconds,
            "batch_fill": backbone.inputs / (backbone.calls * args.batch_size * crops)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="length of each resolution's video")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per forward (x crops: clip-crops)")
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--decoders", type=int, default=cores, help="decoding threads (batched)")
    parser.add_argument("--decoder-threads", type=int, default=1, help="FFmpeg threads per decoder (batched)")
    parser.add_argument("--in-flight", type=int, default=4 * cores, help="videos in flight (batched)")
    parser.add_argument("--decoder", choices=("decord", "pyav"), default="decord",
                        help="the pipeline's decoder (the ceiling is always decord's)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed passes of each measurement; the best is kept (the machine may be shared)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="for the ceiling")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vfx-bench-supply")
    parser.add_argument("--pretrained-dir", type=Path)
    parser.add_argument("--quick", action="store_true", help="10 s videos (under 3 minutes)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = min(args.seconds, 10)
    return args


def resolution_table(args: argparse.Namespace, extractor, ceilings: dict[str, float]) -> list[dict]:
    """One row per resolution and crop type; printed as it goes."""
    print(f"{'video':>6} {'crop':>6} {'frames/s':>9} {'clip-crops/s':>13} {'ceiling':>8} {'supply':>7}")
    rows = []
    for name, (width, height) in RESOLUTIONS.items():
        video = args.workdir / f"{name}-{args.seconds}s.mp4"
        for crop_type in CROP_TYPES:
            # One copy per decoder: the ceiling keeps every core busy too.
            copies = [video] * args.decoders
            runs = [supply_run(extractor, copies, crop_type=crop_type, args=args)
                    for _ in range(args.repeats)]
            run = max(runs, key=lambda run: run["frames_per_s"])
            share = run["frames_per_s"] / ceilings[name]
            rows.append({"video": name, "size": f"{width}x{height}", "crop_type": crop_type,
                         "ceiling_frames_per_s": ceilings[name], "supply": share, **run})
            print(f"{name:>6} {crop_type:>6} {run['frames_per_s']:9.0f} {run['clip_crops_per_s']:13.1f} "
                  f"{ceilings[name]:8.0f} {share:7.0%}", flush=True)
    return rows


def mixed_run(args: argparse.Namespace, extractor, ceilings: dict[str, float]) -> dict[str, dict]:
    """The mixed folder, center crops, both architectures: supply against the ceiling, batch fill."""
    videos, ceiling_seconds = [], 0.0
    scale = max(1, args.seconds // 10)
    for index, (name, seconds) in enumerate(MIXED):
        width, height = RESOLUTIONS[name]
        seconds *= scale
        path = write_h264(args.workdir / f"mixed-{index}-{name}-{seconds}s.mp4", width=width, height=height,
                          num_frames=seconds * FPS, fps=FPS)
        videos.append(path)
        ceiling_seconds += seconds * FPS / ceilings[name]
    videos *= MIXED_REPEATS
    ceiling_seconds *= MIXED_REPEATS
    print(f"mixed: {len(videos)} videos ({', '.join(f'{n} {s * scale} s' for n, s in MIXED)}, "
          f"{MIXED_REPEATS} times), center crop, batches of {args.batch_size}")
    found = {}
    for batched in (False, True):
        runs = [supply_run(extractor, videos, crop_type="center", args=args, batched=batched)
                for _ in range(args.repeats)]
        run = max(runs, key=lambda run: run["frames_per_s"])
        run["supply"] = ceiling_seconds / run["seconds"]
        found[run["architecture"]] = run
        print(f"  {run['architecture']:>9}: {run['clips']} clips in {run['forwards']} forwards, "
              f"{run['frames_per_s']:.0f} frames/s, supply {run['supply']:.0%}, "
              f"batch fill {run['batch_fill']:.0%}", flush=True)
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from throughput import ensure_weights

    args.workdir.mkdir(parents=True, exist_ok=True)
    extractor = null_extractor(ensure_weights(args.pretrained_dir, ["i3d"]))
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; pipeline decoder {args.decoder}, "
          f"batch {args.batch_size} clips, {args.decoders} decoders x {args.decoder_threads} "
          f"FFmpeg thread(s), {args.in_flight} videos in flight, {args.seconds} s videos at {FPS} fps",
          flush=True)
    ceilings = {}
    for name, (width, height) in RESOLUTIONS.items():
        video = write_h264(args.workdir / f"{name}-{args.seconds}s.mp4", width=width, height=height,
                            num_frames=args.seconds * FPS, fps=FPS)
        ceilings[name] = decode_ceiling(video, processes=args.processes, repeats=args.repeats)
    rows = resolution_table(args, extractor, ceilings)
    mixed = mixed_run(args, extractor, ceilings)
    clip_span = extractor.spec.clip_len * extractor.spec.sampling_rate
    per_core = {name: value / args.processes for name, value in ceilings.items()}
    print("per core (decode ceiling / cores): " + ", ".join(
        f"{name} {value:.0f} frames/s = {value / clip_span:.1f} clips/s" for name, value in per_core.items()))
    print(f"  (a {extractor.spec.clip_len}x{extractor.spec.sampling_rate} clip spans {clip_span} frames; "
          "cores needed = GPU clips/s / clips/s per core, x5 the clip-crops for 5-crop)")
    if args.json:
        args.json.write_text(json.dumps({"cores": os.cpu_count(), "decoder": args.decoder, "rows": rows,
                                         "mixed": mixed, "per_core_frames_per_s": per_core}, indent=2))
    batched = mixed["batched"]
    print(f"supply: {batched['supply']:.0%} of the decode ceiling, batch fill {batched['batch_fill']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
