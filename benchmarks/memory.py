"""Peak memory against video resolution: a 4K video should cost about what a 360p one does.

For each generated video (360p and 4K by default, H.264 written with PyAV) and each decoding
mode, a fresh Python process loads I3D (stand-in weights), extracts the video's features on the
CPU and reports its peak RSS:

* **chunked**: what :meth:`vfx_tasks.FeatureExtractor.extract` does: at most
  ``DECODE_CHUNK_BYTES`` of full-size frames are decoded at once and each chunk is resized to
  the model's short side before the next;
* **whole**: the baseline, every distinct frame of a batch decoded at full size first (the
  pipeline before chunking), emulated by raising ``DECODE_CHUNK_BYTES`` above any batch.

Run from the repository root (``pip install av`` for the encoder)::

    PYTHONPATH=. .venv/bin/python benchmarks/memory.py            # about 2 minutes on 2 cores

The last line reads ``memory: 4K peak is N.NNx the 360p peak (chunked), M.MMx (whole batches)``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from videos import write_h264  # noqa: E402

#: Name -> (width, height).
RESOLUTIONS = {"360p": (640, 360), "4K": (3840, 2160)}
MODES = ("chunked", "whole")


def peak_rss_mib() -> float:
    """This process's peak resident memory. ``VmHWM`` rather than ``getrusage``: the latter keeps
    the parent's peak across fork and exec, and the parent encoded the 4K video."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def measure_child(video: Path, *, mode: str, pretrained_dir: Path, batch_size: int) -> dict[str, float]:
    """In this (fresh) process: extract ``video``'s features and return the peak RSS."""
    import vfx_tasks.extract.clips as clips
    from vfx_tasks import FeatureExtractor

    if mode == "whole":
        clips.DECODE_CHUNK_BYTES = 1 << 62
    extractor = FeatureExtractor("i3d", pretrained_dir=pretrained_dir, device="cpu")
    after_load_mib = peak_rss_mib()
    result = extractor.extract(video, crop_type="center", batch_size=batch_size)
    return {
        "peak_rss_mib": peak_rss_mib(),
        "after_model_load_mib": after_load_mib,
        "clips": result.shape[0],
        "seconds": result.seconds,
    }


def run_child(video: Path, *, mode: str, pretrained_dir: Path, batch_size: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", str(video), "--mode", mode,
               "--pretrained-dir", str(pretrained_dir), "--batch-size", str(batch_size)]
    completed = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-frames", type=int, default=130, help="frames per video (130: two clips)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vfx-bench-memory")
    parser.add_argument("--pretrained-dir", type=Path)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, default="chunked", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        stats = measure_child(args.child, mode=args.mode, pretrained_dir=args.pretrained_dir,
                              batch_size=args.batch_size)
        print(json.dumps(stats))
        return 0
    from throughput import ensure_weights

    pretrained_dir = ensure_weights(args.pretrained_dir, ["i3d"])
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (width, height) in RESOLUTIONS.items():
        video = write_h264(args.workdir / f"{name}-{args.num_frames}.mp4", width=width, height=height,
                            num_frames=args.num_frames, preset="ultrafast")
        for mode in MODES:
            stats = run_child(video, mode=mode, pretrained_dir=pretrained_dir, batch_size=args.batch_size)
            rows.append({"video": name, "size": f"{width}x{height}", "mode": mode, **stats})
            print(f"{name:>5} {width}x{height:<5} {mode:>7}: peak RSS {stats['peak_rss_mib']:7.0f} MiB "
                  f"(model loaded: {stats['after_model_load_mib']:.0f} MiB), {stats['clips']} clips "
                  f"in {stats['seconds']:.1f} s", flush=True)
    peak = {(row["video"], row["mode"]): row["peak_rss_mib"] for row in rows}
    ratios = {mode: peak[("4K", mode)] / peak[("360p", mode)] for mode in MODES}
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                         "rows": rows, "ratios": ratios}, indent=2))
    print(f"memory: 4K peak is {ratios['chunked']:.2f}x the 360p peak (chunked), "
          f"{ratios['whole']:.2f}x (whole batches)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
