"""One command that proves the product on a GPU, sized for one short lease (issue 21).

On a CUDA machine, in under 8 minutes on one H100/H200 with 16 cores, it:

1. runs ``pytest -m gpu`` (golden fidelity fp32/fp16/bf16 on the GPU, the batched loop on CUDA,
   GPU transforms, out-of-memory splitting), failing rather than skipping without a GPU;
2. measures I3D 5-crop on generated 480p videos in fp32 and bf16, with decord and PyAV (and
   NVDEC when PyNvVideoCodec works): the naive per-video baseline, the per-video pipeline and the
   batched loop with 16 and 64 videos in flight, in clip-crops/s, GPU busy %, peak memory and
   ``rel`` against fp32 (``acceptance_matrix.py``), plus the decode ceilings;
3. runs the whole queue once, ``vfx-enqueue --local`` over 32 of those videos with stand-in
   weights, and reports videos/s and the worker plan it chose;
4. writes every table as markdown and JSON to ``--out`` (default ``$OUT``), with the GPU, driver,
   torch, CUDA, cores and every command, rewritten after each step.

Each step has a time budget and the whole a deadline; a step past its budget stops (the matrix
skips its least important cells) and the report says so. ``--dry-run`` runs the same steps on
the CPU with tiny sizes and no GPU figures (``tests/benchmarks/test_gpu_acceptance.py``).

    source .whl/env.sh && python3 benchmarks/gpu_acceptance.py --out $OUT      # the GPU machine
    python3 benchmarks/gpu_acceptance.py --dry-run --out /tmp/acceptance       # anywhere, ~1 min

Exit status: 0 every check passed, 1 a test, a tolerance, a video or a step failed, 2 a usage
error or no GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from acceptance_matrix import MatrixPlan, decode_ceilings, run_matrix  # noqa: E402
from acceptance_report import Report, environment  # noqa: E402
from acceptance_steps import pytest_command, run_pytest, run_queue  # noqa: E402
from throughput import ensure_weights  # noqa: E402
from videos import video_codec, write_videos_async  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
STEPS = ("pytest", "matrix", "queue")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Sizes:
    """How big each step is, and its time budget in seconds."""

    videos: int
    frames: int
    width: int
    height: int
    subset: int  # videos of the naive and per-video cells (the batched ones take all)
    in_flight: tuple[int, ...]
    crop_type: str
    num_clips: int
    queue_videos: int
    pytest_seconds: float
    matrix_seconds: float
    queue_seconds: float
    total_seconds: float
    batch_size: int = 16


#: One H100/H200 with 16 cores: 64 videos of 512 frames (8 clips each, 2,560 clip-crops a batched
#: cell, 160 a naive or per-video one). Budgets: 180 s for the tests (each precision and batch
#: shape has cuDNN pick its kernels once), 170 s for the matrix (its least important cells give
#: way first), 90 s for the queue (a worker's start and model load included); 440 s in all,
#: about 8 minutes with the kit's installation.
FULL = Sizes(videos=64, frames=512, width=854, height=480, subset=4, in_flight=(16, 64), crop_type="5-crop",
             num_clips=-1, queue_videos=32, pytest_seconds=180, matrix_seconds=170, queue_seconds=90,
             total_seconds=440)
#: The same steps on a 2-core CPU: two small videos (downscaled to 256 as real ones are), one
#: clip each, center crop.
DRY = Sizes(videos=2, frames=40, width=384, height=288, subset=1, in_flight=(2,), crop_type="center",
            num_clips=1, queue_videos=2, pytest_seconds=120, matrix_seconds=150, queue_seconds=150,
            total_seconds=480)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=os.environ.get("OUT") or None,
                        help="folder for the report and logs (default: $OUT)")
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, tiny sizes")
    parser.add_argument("--skip", nargs="+", default=[], choices=STEPS, help="steps to leave out")
    parser.add_argument("--decoders", nargs="+", default=["decord", "pyav"], choices=["decord", "pyav"],
                        help="decoders of the matrix (PyAV only where installed)")
    parser.add_argument("--no-nvdec", action="store_true", help="leave NVDEC out even if it imports")
    parser.add_argument("--pretrained-dir", type=Path, help="checkpoints (default: generated stand-ins)")
    parser.add_argument("--workdir", type=Path, help="videos and features (default: a new temporary folder)")
    args = parser.parse_args(argv)
    if args.out is None:
        parser.error("give --out FOLDER (or set OUT)")
    return args


def usable_decoders(wanted: list[str]) -> tuple[str, ...]:
    """The decoders asked for that import here (PyAV travels to the GPU machine only if carried)."""
    import importlib.util

    return tuple(d for d in wanted if d == "decord" or importlib.util.find_spec("av") is not None)


class Run:
    """The steps, their budgets and the report they fill."""

    def __init__(self, args: argparse.Namespace, sizes: Sizes, device: torch.device) -> None:
        self.args, self.sizes, self.device = args, sizes, device
        self.started = time.monotonic()
        self.deadline = self.started + sizes.total_seconds
        self.report = Report(args.out)
        self.ok = True
        self.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vfx-gpu-acceptance-"))

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {message}", flush=True)

    def step(self, name: str, budget: float, work: Callable[[float], dict[str, object]]) -> None:
        """Run one step within ``budget`` seconds (less if the whole run's deadline comes first),
        record it, rewrite the report. A step with no time left fails: the proof is incomplete."""
        if name in self.args.skip:
            self.report.steps.append({"step": name, "status": "skipped (--skip)"})
            return
        budget = min(budget, self.deadline - time.monotonic())
        if budget < 10:
            self.report.steps.append({"step": name, "status": "skipped: the run's time was spent"})
            self.ok = False
            return
        self.log(f"step {name} (budget {budget:.0f} s)")
        started = time.monotonic()
        try:
            outcome = work(budget)
        except Exception as e:  # the report must still be written, with the reason
            traceback.print_exc()
            outcome = {"status": f"error: {type(e).__name__}: {e}"}
        status = str(outcome.get("status", "ok"))
        self.ok &= status == "ok"
        self.report.steps.append({"step": name, "status": status, "seconds": time.monotonic() - started,
                                  "budget_s": budget, "note": outcome.get("note")})
        self.report.write()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print(f"No CUDA GPU is visible (torch {torch.__version__}, built for CUDA {torch.version.cuda}): "
              "this script measures a GPU. Run it on the GPU machine, or check it here with --dry-run.",
              file=sys.stderr)
        return EXIT_USAGE
    sizes = DRY if args.dry_run else FULL
    run = Run(args, sizes, torch.device("cpu" if args.dry_run else "cuda"))
    report = run.report
    report.command(["python3", *(sys.argv if argv is None else ["benchmarks/gpu_acceptance.py", *argv])])
    report.environment = environment(run.device, repo=REPO)
    decoders = usable_decoders(args.decoders)
    nvdec = not (args.dry_run or args.no_nvdec)
    report.environment["videos"] = (f"{sizes.videos} x {sizes.width}x{sizes.height}, {sizes.frames} frames "
                                    f"at 25 fps, {video_codec()}")
    report.settings = dataclasses.asdict(sizes) | {"decoders": decoders, "nvdec": nvdec,
                                                   "workdir": run.workdir}
    report.write()
    videos_dir = run.workdir / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    paths = [videos_dir / f"v{index:03d}.mp4" for index in range(sizes.videos)]
    # The videos are written while the tests run: neither is measured.
    pool, writing = write_videos_async(paths, width=sizes.width, height=sizes.height, num_frames=sizes.frames,
                                       processes=len(os.sched_getaffinity(0)))
    report.command(pytest_command(), shown=("VFX_REQUIRE_GPU=1 " if not args.dry_run else "") +
                   shlex.join(["python3", *pytest_command()[1:]]))
    run.step("pytest", sizes.pytest_seconds, lambda budget: pytest_step(run, budget))
    try:
        writing.get(timeout=max(60.0, run.deadline - time.monotonic()))
    except Exception as e:  # without videos the other steps have nothing to measure
        report.steps.append({"step": "videos", "status": f"error: {type(e).__name__}: {e}"})
        args.skip += ["matrix", "queue"]
        run.ok = False
    finally:
        pool.terminate()
        pool.join()
    weights = ensure_weights(args.pretrained_dir, ["i3d"])
    run.step("matrix", sizes.matrix_seconds,
             lambda budget: matrix_step(run, budget, paths, weights, decoders, nvdec))
    run.step("queue", sizes.queue_seconds, lambda budget: queue_step(run, budget, paths, weights))
    path = report.write()
    print(path.read_text())
    if args.workdir is None:
        shutil.rmtree(run.workdir, ignore_errors=True)
    run.log(f"done: {'every check passed' if run.ok else 'SOME CHECKS FAILED'}; report in {path}")
    return EXIT_OK if run.ok else EXIT_FAILED


def pytest_step(run: Run, budget: float) -> dict[str, object]:
    result = run_pytest(repo=REPO, log_path=run.args.out / "pytest-gpu.log", timeout=budget,
                        require_gpu=not run.args.dry_run)
    run.report.tables["pytest -m gpu"] = [result]
    return result


def matrix_step(run: Run, budget: float, videos: list[Path], weights: Path, decoders: tuple[str, ...],
                nvdec: bool) -> dict[str, object]:
    sizes = run.sizes
    plan = MatrixPlan(model="i3d", crop_type=sizes.crop_type, batch_size=sizes.batch_size,
                      num_clips=sizes.num_clips, precisions=("fp32", "bf16"), decoders=decoders,
                      in_flight=sizes.in_flight, nvdec=nvdec, device=run.device.type)
    deadline = time.monotonic() + budget
    result = run_matrix(plan, weights=weights, videos=videos, subset=videos[: sizes.subset],
                        deadline=deadline, log=run.log)
    run.report.tables[f"Throughput: I3D {sizes.crop_type}, {sizes.width}x{sizes.height}"] = result.rows
    # The ceilings are context, not a check: they get what is left of the budget, at least 20 s.
    ceilings = decode_ceilings(videos, nvdec=nvdec, deadline=max(deadline, time.monotonic() + 20))
    run.report.tables["Decode ceilings (every frame of the videos)"] = ceilings
    skipped = sum(str(row["status"]).startswith("skipped") for row in result.rows)
    return {"status": "ok" if result.ok else "a cell failed or was out of tolerance",
            "note": f"{skipped} cells skipped for time" if skipped else None}


def queue_step(run: Run, budget: float, videos: list[Path], weights: Path) -> dict[str, object]:
    sizes = run.sizes
    folder = run.workdir / "queue-videos"
    folder.mkdir(exist_ok=True)
    for video in videos[: sizes.queue_videos]:
        target = folder / video.name
        if not target.exists():
            try:
                os.link(video, target)
            except OSError:
                shutil.copy(video, target)
    output_dir = run.workdir / "queue-features"
    command = ["python3", "-m", "vfx_tasks.cli.enqueue", "--local", "--input_dir", str(folder),
               "--output_dir", str(output_dir), "--model", "i3d", "--crop_type", sizes.crop_type,
               "--num_clips_per_video", str(sizes.num_clips), "--batch_size", str(sizes.batch_size),
               "--pretrained_dir", str(weights), "--device", "cpu" if run.args.dry_run else "auto",
               "--poll_seconds", "0.2", "--wait-timeout", str(int(max(5, budget - 20)))]
    run.report.command(command)
    result = run_queue([sys.executable, *command[1:]], output_dir=output_dir,
                       log_path=run.args.out / "queue.log", timeout=budget, tmp_dir=run.workdir / "tmp",
                       sample_gpu=run.device.type == "cuda")
    run.report.tables["Whole queue: vfx-enqueue --local"] = [result]
    return result


if __name__ == "__main__":
    sys.exit(main())
