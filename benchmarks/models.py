"""Clip-crops per second of one model per model-zoo family, with stand-in weights.

Each model runs through :meth:`FeatureExtractor.embed` (trunk, pooling as its head pools) on
random clip-crops of its own input shape, in fp32, one forward of ``--clips`` clip-crops at a
time; the best of ``--repeats`` timed forwards after one warm-up counts. The I3D seed model is the
baseline: its forwards alternate with each family's, and the ratio is taken between the two bests
of those interleaved runs, so that other work on a shared machine weighs on both sides alike.
Decoding and resizing are not timed (see supply.py and preprocess.py): this is the model's own cost.

Run from the repository root::

    PYTHONPATH=. .venv/bin/python benchmarks/models.py                       # CPU, 2 clip-crops
    PYTHONPATH=. .venv/bin/python benchmarks/models.py --device cuda --clips 32   # a GPU box
    PYTHONPATH=. .venv/bin/python benchmarks/models.py --families x3d tsm --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from vfx_tasks.extract.device import resolve_device
from vfx_tasks.extract.pipeline import FeatureExtractor
from vfx_tasks.models import ModelSpec, get_model_spec, spec_from_config
from vfx_tasks.models.standin_checkpoint import write_standin_checkpoint
from vfx_tasks.models.zoo import configs_root

#: One model per family (the seeds first), as tests/models/test_zoo_equivalence.py proves them.
MODELS = {
    "i3d (seed)": "i3d",
    "swin (seed)": "swin-t",
    "c2d": "c2d_r50-in1k-pre-nopool_8xb32-8x8x1-100e_kinetics400-rgb",
    "c3d": "c3d",
    "csn": "ircsn_ig65m-pretrained-r50-bnfrozen_8xb12-32x2x1-58e_kinetics400-rgb",
    "i3d": "i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb",
    "mvit": "mvit-s",
    "omnisource": "slowonly_r50_8xb16-8x8x1-256e_imagenet-kinetics400-rgb",
    "r2plus1d": "r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb",
    "slowfast": "slowfast",
    "slowonly": "slowonly",
    "swin": "swin-s",
    "tanet": "tanet_imagenet-pretrained-r50_8xb8-dense-1x1x8-100e_kinetics400-rgb",
    "timesformer": "timesformer",
    "tpn": "tpn-slowonly_r50_8xb8-8x8x1-150e_kinetics400-rgb",
    "trn": "trn_imagenet-pretrained-r50_8xb16-1x1x8-50e_sthv2-rgb",
    "tsm": "tsm",
    "tsm (MobileNetV2)": "tsm/tsm_imagenet-pretrained-mobilenetv2_8xb16-1x1x8-100e_kinetics400-rgb.py",
    "tsn": "tsn",
    "uniformer": "uniformer-s",
    "uniformerv2": "uniformerv2-b",
    "videomae": "videomae-b",
    "videomaev2": "videomaev2-s",
    "x3d": "x3d-s",
}


def resolve(model: str, folder: Path) -> ModelSpec:
    if model.endswith(".py"):
        config = configs_root() / "configs" / "recognition" / model
        return spec_from_config(config, folder / f"{config.stem}.pth")
    return get_model_spec(model)


def _seconds(extractor: FeatureExtractor, inputs: torch.Tensor) -> float:
    if extractor.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    extractor.embed(inputs)
    if extractor.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def interleaved_rates(
    extractors: list[FeatureExtractor], clips: int, repeats: int
) -> list[float]:
    """Clip-crops/s of each extractor: one forward of each in turn, ``repeats`` times after a
    warm-up; the best forward of each counts."""
    inputs = []
    for extractor in extractors:
        spec = extractor.spec
        shape = (clips, 1, 3, spec.clip_len, spec.crop_size, spec.crop_size)
        inputs.append(torch.randn(shape, device=extractor.device))
        extractor.embed(inputs[-1])
    best = [float("inf")] * len(extractors)
    for _ in range(repeats):
        for index, extractor in enumerate(extractors):
            best[index] = min(best[index], _seconds(extractor, inputs[index]))
    return [clips / seconds for seconds in best]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="*", help="only these rows (default: all)")
    parser.add_argument("--clips", type=int, default=2, help="clip-crops per forward")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    rows = [name for name in MODELS if not args.families or name.split(" ")[0] in args.families]
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {device}, {args.clips} clip-crops per forward")
    print("| family | D | clip-crop | clip-crops/s | I3D clip-crops/s, interleaved | vs I3D |")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        baseline_spec = get_model_spec("i3d")
        write_standin_checkpoint(baseline_spec, Path(folder))
        baseline = FeatureExtractor(baseline_spec, pretrained_dir=folder, device=str(device))
        for row in rows:
            spec = resolve(MODELS[row], Path(folder))
            if spec.name != baseline_spec.name:
                write_standin_checkpoint(spec, Path(folder))
            extractor = FeatureExtractor(spec, pretrained_dir=folder, device=str(device))
            rate, i3d_rate = interleaved_rates([extractor, baseline], args.clips, args.repeats)
            shape = f"{'x'.join(map(str, spec.input_shape))} {spec.input_format}"
            results.append({"family": row, "model": spec.name, "feature_dim": spec.feature_dim,
                            "input": shape, "clip_crops_per_second": rate,
                            "i3d_clip_crops_per_second": i3d_rate, "vs_i3d_seed": rate / i3d_rate})
            print(f"| {row} | {spec.feature_dim} | {shape} | {rate:.2f} | {i3d_rate:.2f} | "
                  f"{rate / i3d_rate:.2f}x |", flush=True)
            del extractor
            if spec.name != baseline_spec.name:
                (Path(folder) / spec.checkpoint_filename).unlink()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
