"""mmaction2's own answer for a config: its ``init_recognizer``, its test pipeline, its head.

The reference side of tests/models/test_zoo_equivalence.py. Nothing of vfx_tasks' pipeline is
used here: the recognizer is built and loaded by mmaction2 (mmengine's checkpoint loader), the
video is decoded, sampled, resized and cropped by the config's own test pipeline, normalised by
the recognizer's data preprocessor, and the feature is taken where the head receives it.

The config's pipeline is changed in as few places as a feature extractor needs, each with mmaction2's
own transforms: the number of clips, ``CenterCrop`` in place of ``ThreeCrop``/``TenCrop`` (one
crop), no ``twice_sample`` or dense test views, and ``DecordInit``/``DecordDecode`` where a config
reads extracted frames (``RawFrameDecode``).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vfx_tasks.models import ModelSpec
from vfx_tasks.models._mmaction_compat import import_mmaction_backbones

#: Where each head receives its pooled input: (submodule, "in" = its input, "out" = its output).
HEAD_INPUTS: dict[str, tuple[str, str]] = {
    "I3DHead": ("fc_cls", "in"),
    "X3DHead": ("fc1", "in"),  # X3D's head pools, then fc1 (432 -> 2048), then fc2
    "SlowFastHead": ("fc_cls", "in"),
    "TimeSformerHead": ("fc_cls", "in"),
    "UniFormerHead": ("fc_cls", "in"),
    "MViTHead": ("fc_cls", "in"),
    "OmniHead": ("fc3d.2", "in"),  # fc3d = pool, flatten, Linear...
    "TSMHead": ("fc_cls", "in"),  # per frame; averaged per clip by its consensus
    "TRNHead": ("fc_cls", "in"),  # per frame; related (not averaged) by its consensus
    "TSNHead": ("avg_pool", "out"),  # per frame; averaged per clip by its consensus
    "TPNHead": ("avg_pool3d", "out"),
}


@dataclass(frozen=True)
class Reference:
    """Frames mmaction2 sampled, ``(num_clips, T)``, and the pooled features, ``(num_clips, D)``."""

    frame_inds: np.ndarray
    features: np.ndarray


def _test_pipeline(spec: ModelSpec, num_clips: int) -> list[dict[str, Any]]:
    from mmengine.config import Config

    cfg = Config.fromfile(spec.config_path)
    steps = []
    for step in copy.deepcopy(cfg.test_dataloader.dataset.pipeline):
        step = dict(step)
        if step["type"] in ("SampleFrames", "DenseSampleFrames"):
            step["type"] = "SampleFrames"
            step.pop("twice_sample", None)
            if spec.sampler == "sample_frames":
                step["num_clips"] = num_clips
        elif step["type"] == "UniformSample":
            step["num_clips"] = 1
        elif step["type"] in ("ThreeCrop", "TenCrop"):
            step = {"type": "CenterCrop", "crop_size": step["crop_size"]}
        elif step["type"] == "RawFrameDecode":
            step = {"type": "DecordDecode"}
        steps.append(step)
    if steps[0]["type"] != "DecordInit":
        steps.insert(0, {"type": "DecordInit"})
    return steps


def mmaction_reference(spec: ModelSpec, checkpoint: Path, video: Path, *, num_clips: int) -> Reference:
    """Run ``spec``'s config through mmaction2 on ``video``: one centre crop, ``num_clips`` clips
    (for segment samplers one clip, the whole video)."""
    import_mmaction_backbones()  # the wheel's missing DRN module, before mmaction2's own imports
    from mmaction.apis import init_recognizer
    from mmengine.config import Config
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.logging import MMLogger

    MMLogger.get_instance("mmengine").setLevel(logging.ERROR)
    model = init_recognizer(Config.fromfile(spec.config_path), str(checkpoint), device="cpu")
    # mmengine loads non-strictly (it only logs what did not fit): every tensor must have.
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    loaded = model.state_dict()
    assert set(saved) == set(loaded), set(saved) ^ set(loaded)
    assert all(torch.equal(saved[key], loaded[key]) for key in saved)
    module_name, where = HEAD_INPUTS[type(model.cls_head).__name__]
    module = model.cls_head.get_submodule(module_name)
    captured: list[torch.Tensor] = []
    if where == "in":
        module.register_forward_pre_hook(lambda _, args: captured.append(args[0].detach().flatten(1)))
    else:
        module.register_forward_hook(lambda _, args, out: captured.append(out.detach().flatten(1)))

    steps = _test_pipeline(spec, num_clips)
    sampler = next(i for i, step in enumerate(steps) if step["type"] in ("SampleFrames", "UniformSample"))
    results = {"filename": str(video), "label": -1, "start_index": 0, "modality": "RGB"}
    frame_inds = Compose(steps[: sampler + 1])(dict(results))["frame_inds"]
    with torch.no_grad():
        model.test_step(pseudo_collate([Compose(steps)(dict(results))]))
    (pooled,) = captured
    clips = 1 if spec.sampler in ("segments", "uniform_sample") else num_clips
    # 2-D heads see frames (clip after clip): average each clip's frames, as their consensus does.
    features = pooled.view(clips, -1, pooled.shape[-1]).mean(dim=1)
    return Reference(frame_inds.reshape(clips, -1), features.numpy())
