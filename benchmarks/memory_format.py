"""Backbone forward time with contiguous (NCTHW) against channels-last (NTHWC) tensors.

Run from the repository root (stand-in weights are generated when the checkpoints are missing)::

    PYTHONPATH=. .venv/bin/python benchmarks/memory_format.py --model i3d --clips 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import ensure_weights  # noqa: E402

from vfx_tasks.extract.device import resolve_device  # noqa: E402
from vfx_tasks.models import get_model_spec  # noqa: E402
from vfx_tasks.models.backbone import load_backbone  # noqa: E402


def time_forward(model: torch.nn.Module, clips: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    """Best wall time of ``repeats`` forwards after one warm-up, and the last output."""
    with torch.inference_mode():
        output = model(clips)
        best = float("inf")
        for _ in range(repeats):
            if clips.is_cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            output = model(clips)
            if clips.is_cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - started)
    return best, output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="i3d")
    parser.add_argument("--clips", type=int, default=2, help="clip-crops per forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pretrained-dir", type=Path)
    args = parser.parse_args(argv)
    spec = get_model_spec(args.model)
    device = resolve_device(args.device)
    model = load_backbone(spec, ensure_weights(args.pretrained_dir, [args.model])).to(device)
    clips = torch.randn(args.clips, 3, spec.clip_len, spec.crop_size, spec.crop_size, device=device)
    contiguous, reference = time_forward(model, clips, args.repeats)
    model.to(memory_format=torch.channels_last_3d)
    channels_last, output = time_forward(
        model, clips.contiguous(memory_format=torch.channels_last_3d), args.repeats
    )
    print(f"{spec.name} on {device}, {args.clips} clip-crops: contiguous {contiguous:.3f} s, "
          f"channels_last_3d {channels_last:.3f} s, ratio {contiguous / channels_last:.2f}x, "
          f"max |difference| {(output - reference).abs().max().item():.1e}")


if __name__ == "__main__":
    main()
