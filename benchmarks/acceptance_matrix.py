"""Step 2 of ``gpu_acceptance.py``: every extraction path, precision and decoder, in one run.

Paths, all from ``throughput.py`` except NVDEC's: **naive** (the original tool's order, CPU
float preprocessing, one clip read at a time), **per-video** (``FeatureExtractor.extract``, one
video at a time), **batched** (a ``BatchingLoop`` with N videos in flight, one decoder thread per
core), and **per-video on NVDEC** (``nvdec.py``) when PyNvVideoCodec works. Each cell reports
clip-crops/s, the ratio to naive fp32 decord (the original tool), mean GPU busy %, peak memory
(torch's allocator and NVML's whole-process view) and ``rel`` of its features against the fp32
features of the same videos, with the golden bars (0.01 for fp32, 0.05 for bf16).

Cells run in order of importance and stop at the step's deadline: the rest are listed as
skipped, so a short lease still gives the headline figures (batched, decord, fp32 and bf16).
"""

from __future__ import annotations

import gc
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nvdec import NvdecUnavailable, nvdec_decode_rate, run_nvdec_videos  # noqa: E402
from throughput import (  # noqa: E402
    SIGMA,
    TOLERANCE,
    measure,
    relative_error,
    run_batched_videos,
    run_naive_videos,
    run_ours_videos,
)

from vfx_tasks import FeatureExtractor  # noqa: E402
from vfx_tasks.extract.crops import num_crops  # noqa: E402

Work = Callable[..., list[np.ndarray]]

#: A throughput row's columns, in the order the report shows them. ``x_naive``: clip-crops/s over
#: the naive fp32 decord cell's (the original tool); ``rel``: against the fp32 features of the
#: same videos (the first fp32 cell that read them, the batched decord one for all videos).
COLUMNS = ("path", "decoder", "precision", "in_flight", "videos", "clip_crops", "seconds", "clip_crops_per_s",
           "x_naive", "gpu_busy_percent", "peak_torch_mib", "peak_nvml_mib", "peak_rss_mib", "rel",
           "tolerance", "status")


@dataclass(frozen=True)
class Cell:
    """One measurement: a path on a decoder at a precision, with ``in_flight`` videos at once."""

    path: str
    decoder: str
    precision: str
    in_flight: int = 1

    @property
    def label(self) -> str:
        flight = f", {self.in_flight} in flight" if self.path == "batched" else ""
        return f"{self.path} {self.decoder} {self.precision}{flight}"


@dataclass(frozen=True)
class MatrixPlan:
    """What to measure: the sizes come from ``gpu_acceptance.py`` (full or ``--dry-run``)."""

    model: str
    crop_type: str
    batch_size: int
    num_clips: int
    precisions: tuple[str, ...]
    decoders: tuple[str, ...]
    in_flight: tuple[int, ...]
    nvdec: bool
    device: str

    def cells(self) -> list[Cell]:
        """Most important first: the batched loop, then its baseline, then the rest."""
        first, *more = self.in_flight
        cells: list[Cell] = []
        for decoder in self.decoders:
            cells += [Cell("batched", decoder, p, first) for p in self.precisions]
            cells += [Cell("naive", decoder, p) for p in self.precisions]
            cells += [Cell("per-video", decoder, p) for p in self.precisions]
            cells += [Cell("batched", decoder, p, n) for n in more for p in self.precisions]
        if self.nvdec:
            cells += [Cell("per-video", "nvdec", p) for p in self.precisions]
        return cells


@dataclass
class MatrixResult:
    rows: list[dict[str, object]] = field(default_factory=list)
    decode: list[dict[str, object]] = field(default_factory=list)
    ok: bool = True


def _work(cell: Cell) -> Work:
    if cell.decoder == "nvdec":
        return run_nvdec_videos
    if cell.path == "naive":
        return partial(run_naive_videos, decoder=cell.decoder)
    if cell.path == "per-video":
        return partial(run_ours_videos, videos_in_flight=1, decoder=cell.decoder)
    return partial(run_batched_videos, videos_in_flight=cell.in_flight, decoder=cell.decoder)


def warm_up(extractor: FeatureExtractor, plan: MatrixPlan, videos: list[Path]) -> None:
    """Untimed: lazy initialisation and, on a GPU, cuDNN's choice of kernels for the two batch
    shapes to come (a full batch of the loop, one video's clips)."""
    options = {"crop_type": plan.crop_type, "batch_size": plan.batch_size, "num_clips": plan.num_clips}
    if extractor.device.type == "cuda":
        run_batched_videos(extractor, videos[:2], videos_in_flight=2, **options)
    run_ours_videos(extractor, videos[:1], videos_in_flight=1, **options)


def run_matrix(plan: MatrixPlan, *, weights: Path, videos: list[Path], subset: list[Path],
               deadline: float, log: Callable[[str], None]) -> MatrixResult:
    """Measure every cell of ``plan`` until ``deadline`` (:func:`time.monotonic`)."""
    result = MatrixResult()
    extractors = {p: FeatureExtractor(plan.model, pretrained_dir=weights, device=plan.device, precision=p)  # type: ignore[arg-type]
                  for p in plan.precisions}
    device = extractors[plan.precisions[0]].device
    for precision, extractor in extractors.items():
        log(f"warming up {precision}")
        warm_up(extractor, plan, subset)
    reference: dict[Path, np.ndarray] = {}  # fp32 features per video, from the first fp32 cell
    naive_rate: float | None = None
    for cell in plan.cells():
        if time.monotonic() > deadline:
            result.rows.append(_row(cell, status="skipped: the step's time budget was spent"))
            continue
        cell_videos = videos if cell.path == "batched" else subset
        log(f"{cell.label}: {len(cell_videos)} videos")
        try:
            row = _measure_cell(cell, extractors[cell.precision], cell_videos, plan, device, reference)
        except NvdecUnavailable as e:
            result.rows.append(_row(cell, status=f"n/a: {e}"))
            continue
        except Exception as e:  # one broken cell must not hide the others' figures
            traceback.print_exc()
            result.rows.append(_row(cell, status=f"error: {type(e).__name__}: {e}"))
            result.ok = False
            continue
        if (cell.path, cell.decoder, cell.precision) == ("naive", "decord", "fp32"):
            naive_rate = float(row["clip_crops_per_s"])  # type: ignore[arg-type]
        if cell.decoder != "nvdec":  # NVDEC is not the product's yet: reported, not judged
            result.ok &= bool(row["ok"])
        result.rows.append(row)
    for row in result.rows:
        rate = row.get("clip_crops_per_s")
        row["x_naive"] = rate / naive_rate if naive_rate and isinstance(rate, float) else None
    result.rows = [{column: row.get(column) for column in COLUMNS} for row in result.rows]
    return result


def _measure_cell(cell: Cell, extractor: FeatureExtractor, videos: list[Path], plan: MatrixPlan,
                  device: torch.device, reference: dict[Path, np.ndarray]) -> dict[str, object]:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()  # NVML's peak is then this cell's, not an earlier one's cache
    work = partial(_work(cell), extractor, videos, crop_type=plan.crop_type, batch_size=plan.batch_size,
                   num_clips=plan.num_clips)
    features, stats = measure(work, device)
    if cell.precision == "fp32":
        for video, found in zip(videos, features, strict=True):
            reference.setdefault(video, found)
    pairs = [(found, reference[video]) for video, found in zip(videos, features, strict=True)
             if video in reference and reference[video].shape == found.shape]
    rel = max((relative_error(f, r, SIGMA[plan.model]) for f, r in pairs), default=None)
    clip_crops = sum(len(f) for f in features) * num_crops(plan.crop_type)  # type: ignore[arg-type]
    seconds = float(stats["seconds"])  # type: ignore[arg-type]
    ok = rel is not None and rel <= TOLERANCE[cell.precision]
    status = "ok" if ok else ("no fp32 reference for these videos" if rel is None else "rel over its bar")
    return _row(cell, status=status) | {
        "videos": len(videos), "clip_crops": clip_crops, "seconds": seconds,
        "clip_crops_per_s": clip_crops / seconds, "gpu_busy_percent": stats["gpu_busy_percent"],
        "peak_torch_mib": stats["peak_device_mib"], "peak_nvml_mib": stats["peak_nvml_mib"],
        "peak_rss_mib": stats["peak_rss_mib"], "rel": rel, "tolerance": TOLERANCE[cell.precision], "ok": ok,
    }


def _row(cell: Cell, *, status: str) -> dict[str, object]:
    """A row's labels; ``ok`` is None (not judged) until the cell was measured."""
    return {"path": cell.path, "decoder": cell.decoder, "precision": cell.precision,
            "in_flight": cell.in_flight, "status": status,
            "ok": False if status.startswith("error") else None}


def decode_ceilings(videos: list[Path], *, nvdec: bool, deadline: float) -> list[dict[str, object]]:
    """Frames/s decoding whole videos: decord with one process per core, NVDEC with a few
    sessions; what the pipeline's supply is bounded by."""
    from supply import decode_ceiling

    cores = len(os.sched_getaffinity(0))
    sessions = min(8, len(videos))
    measurements = [("decord", f"{cores} processes x 1 thread, same video",
                     partial(decode_ceiling, videos[0], processes=cores, repeats=1))]
    if nvdec:
        measurements.append(("nvdec", f"{sessions} sessions, {2 * sessions} videos",
                             partial(nvdec_decode_rate, videos[: 2 * sessions], threads=sessions)))
    rows: list[dict[str, object]] = []
    for decoder, how, rate in measurements:
        row: dict[str, object] = {"decoder": decoder, "how": how, "frames_per_s": None}
        if time.monotonic() > deadline:
            rows.append(row | {"status": "skipped: the step's time budget was spent"})
            continue
        try:  # context, not a check: a failure here is reported, not counted
            rows.append(row | {"frames_per_s": rate(), "status": "ok"})
        except Exception as e:
            rows.append(row | {"status": f"n/a: {type(e).__name__}: {e}"})
    return rows
