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

Models read from a config (the model zoo, a user's config) get every tensor of the whole
recognizer mmaction2 builds from that config (backbone, neck and head, as an official file holds
them), by the same rule, so that mmaction2's own ``init_recognizer`` loads the same file.

With ``training_state=True`` the file also carries what mmengine's ``Runner.save_checkpoint``
puts in an official OpenMMLab 1.x checkpoint (config text, a message hub of ``HistoryBuffer``
objects with numpy values, optimizer and scheduler state), written by mmengine itself, so that
the loader is tested against the non-tensor objects real files hold.

Usage: ``python -m vfx_tasks.models.standin_checkpoint OUTPUT_DIR [MODEL ...] [--training-state]``.
"""

from __future__ import annotations

import argparse
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from vfx_tasks.models import MODEL_SPECS, get_model_spec
from vfx_tasks.models.backbone import build_backbone, build_recognizer
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


def _standin_values(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        key: standin_tensor(key, tuple(value.shape)) if value.is_floating_point() else value.clone()
        for key, value in model_state.items()
    }


def standin_state_dict(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """Return the full recognizer state dict (``backbone.*``, ``neck.*``, ``cls_head.*``) for ``spec``."""
    if spec.config_path is not None:
        return _standin_values(build_recognizer(spec).state_dict())
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


def standin_training_state(spec: ModelSpec) -> dict[str, object]:
    """Return the ``meta``, ``message_hub``, ``optimizer`` and ``param_schedulers`` entries of
    a checkpoint saved by mmengine's runner after one short training epoch."""
    import mmengine
    from mmengine.logging import MessageHub
    from mmengine.optim.scheduler import MultiStepLR

    parameter = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([parameter], lr=0.01, momentum=0.9, weight_decay=1e-4)
    scheduler = MultiStepLR(optimizer, milestones=[40, 80], by_epoch=True)
    parameter.grad = torch.full_like(parameter, 0.5)
    optimizer.step()  # gives the optimizer a momentum buffer, as after real training

    hub = MessageHub(f"standin-{spec.name}")
    for loss in (5.99, 5.2):
        hub.update_scalar("train/loss", loss)
        hub.update_scalar("train/loss_cls", np.float32(loss))
    hub.update_scalar("train/lr", torch.tensor(0.01))
    hub.update_info("epoch", 1)
    hub.update_info("iter", 2)
    hub.update_info("best_score", np.float64(0.25))
    meta = {
        "epoch": 1,
        "iter": 2,
        "cfg": (Path(spec.config_path).read_text(encoding="utf-8") if spec.config_path
                else f"model = dict(type='Recognizer3D', backbone={spec.backbone_config!r})\n"),
        "dataset_meta": {"classes": ("abseiling", "air drumming"), "num_classes": NUM_CLASSES},
        "seed": 0,
        "experiment_name": f"standin_{spec.name}",
        "time": "20250101_000000",
        "mmengine_version": mmengine.__version__,
    }
    return {
        "meta": meta,
        "message_hub": hub.state_dict(),
        "optimizer": optimizer.state_dict(),
        "param_schedulers": [scheduler.state_dict()],
    }


def write_standin_checkpoint(spec: ModelSpec, pretrained_dir: Path, *, training_state: bool = False) -> Path:
    """Write ``spec``'s stand-in checkpoint under its official file name; return its path.

    ``training_state=True`` adds the training state of :func:`standin_training_state` and
    writes the file with mmengine's ``save_checkpoint``, as OpenMMLab's runner does.
    """
    pretrained_dir = Path(pretrained_dir)
    pretrained_dir.mkdir(parents=True, exist_ok=True)
    path = pretrained_dir / spec.checkpoint_filename
    meta = {"note": "vfx_tasks deterministic stand-in weights, not trained", "model": spec.name}
    if not training_state:
        torch.save({"meta": meta, "state_dict": standin_state_dict(spec)}, path)
        return path
    from mmengine.runner.checkpoint import save_checkpoint

    checkpoint = standin_training_state(spec)
    checkpoint["meta"] = {**meta, **checkpoint["meta"]}  # type: ignore[dict-item]
    checkpoint["state_dict"] = standin_state_dict(spec)
    save_checkpoint(checkpoint, str(path))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("models", nargs="*", default=list(MODEL_SPECS))
    parser.add_argument(
        "--training-state",
        action="store_true",
        help="also store mmengine training state (meta, message_hub, optimizer), as official files do",
    )
    args = parser.parse_args(argv)
    for name in args.models:
        spec = get_model_spec(name)
        print(write_standin_checkpoint(spec, args.output_dir, training_state=args.training_state))


if __name__ == "__main__":
    main()
