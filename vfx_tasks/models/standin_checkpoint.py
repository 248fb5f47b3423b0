"""Deterministic stand-in checkpoints in mmaction2's layout.

The real Kinetics-400 weights are 100+ MB downloads. For tests, benchmarks and smoke-testing a
deployment we generate checkpoints in which every tensor is a pure function of its key, by the
rule of ``shared/golden/README.md`` (the rule the reference features were computed with):

* non-floating tensors (index buffers, ``num_batches_tracked``) keep the model's own value;
* floating tensors are drawn from ``numpy.random.default_rng(zlib.crc32(key))``:
  ``running_mean`` ~ N(0, 0.01); ``running_var`` = 1 + |N(0, 0.01)|; matrices and kernels (not
  Swin's relative position bias table) ~ N(0, gain * sqrt(1 / fan_in)) with gain 0.25 inside
  non-local blocks, else 1; other ``weight`` = 1 + N(0, 0.01); anything else ~ N(0, 0.02).
* a 400-class ``cls_head.fc_cls`` is added, which the extractor must ignore.

Usage: ``python -m vfx_tasks.models.standin_checkpoint OUTPUT_DIR [MODEL ...]``.
"""

from __future__ import annotations

import argparse
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from vfx_tasks.models import MODEL_SPECS, get_model_spec
from vfx_tasks.models.backbone import build_backbone
from vfx_tasks.models.checkpoint import BACKBONE_PREFIX
from vfx_tasks.models.spec import ModelSpec

NUM_CLASSES = 400


def standin_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Return the float32 stand-in value of the floating tensor called ``key``."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    if key.endswith("running_mean"):
        values = rng.normal(0, 0.01, shape)
    elif key.endswith("running_var"):
        values = 1 + np.abs(rng.normal(0, 0.01, shape))
    elif len(shape) >= 2 and "relative_position_bias_table" not in key:
        gain = 0.25 if "non_local" in key else 1.0
        values = rng.normal(0, gain * math.sqrt(1 / math.prod(shape[1:])), shape)
    elif key.endswith("weight"):
        values = 1 + rng.normal(0, 0.01, shape)
    else:
        values = rng.normal(0, 0.02, shape)
    return torch.from_numpy(np.asarray(values, dtype=np.float32))


def standin_state_dict(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """Return the full recognizer state dict (``backbone.*`` and ``cls_head.*``) for ``spec``."""
    state: dict[str, torch.Tensor] = {}
    for name, value in build_backbone(spec).state_dict().items():
        key = BACKBONE_PREFIX + name
        state[key] = (
            standin_tensor(key, tuple(value.shape)) if value.is_floating_point() else value.clone()
        )
    state["cls_head.fc_cls.weight"] = standin_tensor(
        "cls_head.fc_cls.weight", (NUM_CLASSES, spec.feature_dim)
    )
    state["cls_head.fc_cls.bias"] = standin_tensor("cls_head.fc_cls.bias", (NUM_CLASSES,))
    return state


def write_standin_checkpoint(spec: ModelSpec, pretrained_dir: Path) -> Path:
    """Write ``spec``'s stand-in checkpoint under its official file name; return its path."""
    pretrained_dir = Path(pretrained_dir)
    pretrained_dir.mkdir(parents=True, exist_ok=True)
    path = pretrained_dir / spec.checkpoint_filename
    meta = {"note": "vfx_tasks deterministic stand-in weights, not trained", "model": spec.name}
    torch.save({"meta": meta, "state_dict": standin_state_dict(spec)}, path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("models", nargs="*", default=list(MODEL_SPECS))
    args = parser.parse_args(argv)
    for name in args.models:
        print(write_standin_checkpoint(get_model_spec(name), args.output_dir))


if __name__ == "__main__":
    main()
