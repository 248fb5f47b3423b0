"""Which convolution kernels the backbone really runs, per precision, and how long they take.

Some PyTorch releases turned cuDNN off for half-precision 3-D convolutions (the 2.9 era), so an
``fp16`` run can silently fall back to PyTorch's own, much slower ``slow_conv3d``. This script
profiles one forward pass per precision with :mod:`torch.profiler` and prints, for each
precision, the convolution implementations the dispatcher chose (``cudnn_convolution``,
``mkldnn_convolution`` for oneDNN on the CPU, ``slow_conv3d`` for the fallback), their call
counts and self time, the wall time of the pass, and on CUDA the kernels that took the most
device time (their names say cuDNN/CUTLASS/xmma or not, and whether tensor cores are used).

    PYTHONPATH=. .venv/bin/python benchmarks/kernels.py --model i3d --clips 1          # CPU
    PYTHONPATH=. .venv/bin/python benchmarks/kernels.py --model i3d --clips 8 --crops 5 \\
        --precisions fp32 fp16 bf16 --channels-last both                              # a GPU box
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import ensure_weights  # noqa: E402

from vfx_tasks.extract.device import autocast, resolve_device, validate_precision  # noqa: E402
from vfx_tasks.models import get_model_spec  # noqa: E402
from vfx_tasks.models.backbone import load_backbone  # noqa: E402

#: Profiler op names that are the implementation of a convolution (not the dispatching wrappers).
CONV_IMPLEMENTATIONS = ("cudnn_convolution", "mkldnn_convolution", "slow_conv3d", "slow_conv_dilated3d",
                        "_slow_conv2d", "thnn_conv", "convolution_overrideable", "miopen_convolution",
                        "_nnpack_spatial_convolution", "conv_depthwise3d")


def profile_pass(model: torch.nn.Module, clips: torch.Tensor, *, precision: str) -> dict[str, object]:
    """One profiled forward of ``clips`` (after a warm-up one) under ``precision`` autocast."""
    device = clips.device

    def forward() -> None:
        with torch.inference_mode(), autocast(device, validate_precision(precision)):
            model(clips)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    forward()  # warm-up: cuDNN autotuning, lazy initialisation
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        started = time.perf_counter()
        forward()
        seconds = time.perf_counter() - started
    events = profiler.key_averages()
    own_time = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    convs = [
        (event.key, event.count, getattr(event, own_time, 0.0) / 1e3)
        for event in events
        if any(name in event.key for name in CONV_IMPLEMENTATIONS)
    ]
    kernels: list[tuple[str, int, float]] = []
    if device.type == "cuda":
        on_device = [e for e in events if e.device_type.name == "CUDA"]
        kernels = sorted(((e.key, e.count, e.self_device_time_total / 1e3) for e in on_device),
                         key=lambda k: -k[2])[:8]
    return {"seconds": seconds, "convs": convs, "kernels": kernels}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="i3d", choices=["i3d", "swin-t"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "bf16"])
    parser.add_argument("--clips", type=int, default=1, help="clips in the batch")
    parser.add_argument("--crops", type=int, default=1, help="crops per clip")
    parser.add_argument("--channels-last", choices=["no", "yes", "both"], default="no",
                        help="input and weights in channels-last 3-D layout")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pretrained-dir", type=Path)
    args = parser.parse_args(argv)
    spec = get_model_spec(args.model)
    device = resolve_device(args.device)
    model = load_backbone(spec, ensure_weights(args.pretrained_dir, [args.model])).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    cudnn = torch.backends.cudnn.version() if device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as FeatureExtractor sets it
    print(f"{spec.name} on {device} ({name}), torch {torch.__version__}, cuDNN {cudnn}, "
          f"{torch.get_num_threads()} CPU threads, {args.clips} clips x {args.crops} crops per pass")
    size = (args.clips * args.crops, 3, spec.clip_len, spec.crop_size, spec.crop_size)
    clips = torch.randn(size, device=device)
    layouts = {"no": [False], "yes": [True], "both": [False, True]}[args.channels_last]
    for channels_last in layouts:
        memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        model.to(memory_format=memory_format)
        layout_clips = clips.contiguous(memory_format=memory_format)
        for precision in args.precisions:
            result = profile_pass(model, layout_clips, precision=precision)
            layout = "channels-last" if channels_last else "contiguous"
            print(f"\n{precision}, {layout}: {result['seconds']:.3f} s per pass")
            for key, count, ms in result["convs"]:  # type: ignore[attr-defined]
                print(f"  {key:<40} {count:>4} calls {ms:>10.1f} ms")
            for key, count, ms in result["kernels"]:  # type: ignore[attr-defined]
                print(f"  kernel {key[:90]:<90} {count:>4} {ms:>9.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
