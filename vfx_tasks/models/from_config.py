"""A :class:`ModelSpec` read from an mmaction2 recognizer config, not typed in.

Everything the pipeline needs comes from the config: the backbone (and neck), the head's pooling
and input size, the test pipeline's sampling, resize and crop, and the data preprocessor's
mean/std and layout. The config is parsed with mmengine's ``Config`` (its ``_base_`` files
merged), which imports neither torch nor mmaction2. Whatever the pipeline cannot reproduce
exactly is refused with a :class:`ConfigurationError` naming the config and the step.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vfx_tasks.errors import ConfigurationError, DependencyError
from vfx_tasks.models._mmaction_compat import unsupported_backbone_reason
from vfx_tasks.models.spec import InputFormat, ModelSpec, Pooling, Sampler

RECOGNIZERS = ("Recognizer2D", "Recognizer3D", "RecognizerOmni")
_SAMPLERS = ("SampleFrames", "DenseSampleFrames", "UniformSample")
_CROPS = ("CenterCrop", "ThreeCrop", "TenCrop")
#: Test pipeline steps that decode or pack, which the extraction pipeline does its own way.
_PASS_THROUGH = ("DecordInit", "DecordDecode", "PyAVInit", "PyAVDecode", "OpenCVInit", "OpenCVDecode",
                 "RawFrameDecode", "FormatShape", "PackActionInputs")
#: Heads whose classifier takes the backbone output averaged over space and time (3-D input).
_AVG3D_HEADS = ("I3DHead", "X3DHead", "TPNHead", "OmniHead")
#: Heads of 2-D models that average each frame over space and the frames of a clip.
_SEGMENT_HEADS = ("TSNHead", "TSMHead", "TRNHead", "TPNHead")


def spec_from_config(
    config: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    *,
    name: str | None = None,
    aliases: tuple[str, ...] = (),
    family: str = "custom",
    config_name: str | None = None,
) -> ModelSpec:
    """The spec of the recognizer that ``config`` describes, with weights from ``checkpoint``.

    Args:
        config: An mmaction2 recognizer config file (``Recognizer2D``/``3D``).
        checkpoint: Its weights: a local file, read from where it is, or an ``http(s)`` URL,
            downloaded into the pretrained folder under the URL's file name.
        name, aliases, family, config_name: How the model is called (default: the config's file
            name, no aliases, ``custom``, the config's file name).

    Raises:
        ConfigurationError: the config cannot be read, is not a recognizer, or asks for a step
            the pipeline cannot reproduce (the message names the config and the step).
        DependencyError: its backbone cannot run with the installed packages (TIN, MobileOne).
    """
    path = Path(config)
    label = config_name or path.name
    cfg = _read_config(path)
    model = _mapping(cfg.get("model"), label, "model")
    backbone = _backbone(model, label, name or label)
    neck = model.get("neck")
    head = _mapping(model.get("cls_head"), label, "model.cls_head")
    steps = _test_pipeline(cfg, label)
    input_format = _input_format(steps, model, label)
    mean_rgb, std_rgb = _normalization(model, label)
    feature_dim = head.get("in_channels")
    if not isinstance(feature_dim, int) or feature_dim < 1:
        raise ConfigurationError(
            f"Model config {label}: cls_head.in_channels ({feature_dim!r}) is not a feature size."
        )
    return ModelSpec(
        name=name or path.stem,
        aliases=aliases,
        backbone_config=backbone,
        feature_dim=feature_dim,
        **_checkpoint_fields(str(checkpoint)),
        resize_short_side=_short_side(steps, label),
        crop_size=_crop_size(steps, label),
        mean_rgb=mean_rgb,
        std_rgb=std_rgb,
        family=family,
        neck_config=dict(neck) if neck else None,
        pooling=_pooling(head, input_format, has_neck=bool(neck), label=label),
        input_format=input_format,
        preprocessing="mmaction2",
        config_path=str(path.resolve()),
        config_name=label,
        config_sha256=_resolved_sha256(cfg),
        **_sampling(steps, backbone, head, label),
    )


def _backbone(model: Mapping[str, Any], label: str, name: str) -> dict[str, Any]:
    """The recognizer's backbone config, ``pretrained`` disabled; refused if it cannot run here."""
    if model.get("type") not in RECOGNIZERS:
        raise ConfigurationError(
            f"Model config {label} describes a {model.get('type')!r}, not a video recognizer. "
            f"vfx_tasks extracts features with {', '.join(RECOGNIZERS)} configs."
        )
    backbone = dict(_mapping(model.get("backbone"), label, "model.backbone"))
    if reason := unsupported_backbone_reason(str(backbone.get("type"))):
        raise DependencyError(f"Model {name} ({label}) cannot run here: {reason}.")
    if "pretrained" in backbone:
        backbone["pretrained"] = None  # initial weights never matter: the checkpoint replaces them
    return backbone


def _checkpoint_fields(location: str) -> dict[str, Any]:
    """A URL is downloaded into the pretrained folder under its file name; a path is read in place."""
    if urllib.parse.urlsplit(location).scheme in ("http", "https"):
        filename = Path(urllib.parse.urlsplit(location).path).name
        return {"checkpoint_filename": filename, "checkpoint_url": location, "checkpoint_file": None}
    path = Path(location).expanduser().resolve()
    return {"checkpoint_filename": path.name, "checkpoint_url": path.as_uri(), "checkpoint_file": str(path)}


def _read_config(path: Path) -> Any:
    from mmengine.config import Config

    if not path.is_file():
        raise ConfigurationError(
            f"Model config {path} does not exist. Give the path of an mmaction2 config file."
        )
    try:
        return Config.fromfile(str(path))
    except Exception as e:  # mmengine runs the file: a broken one can raise anything
        raise ConfigurationError(
            f"Cannot read model config {path} ({type(e).__name__}: {e}). Check that it is an mmaction2 "
            "config and that its _base_ files exist."
        ) from e


def _mapping(value: object, label: str, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"Model config {label} has no {key} section (found {value!r}).")
    return value


def _resolved_sha256(cfg: Any) -> str:
    """sha256 of the config with its ``_base_`` files merged: an edit of a base file changes it."""
    text = json.dumps(cfg.to_dict(), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def _test_pipeline(cfg: Any, label: str) -> list[Mapping[str, Any]]:
    """The test pipeline's steps (or the validation pipeline's, for configs that only have one)."""
    for loader in ("test_dataloader", "val_dataloader"):
        dataset = (cfg.get(loader) or {}).get("dataset") or {}
        if dataset.get("pipeline"):
            return list(dataset["pipeline"])
    for key in ("test_pipeline", "val_pipeline"):
        if cfg.get(key):
            return list(cfg[key])
    raise ConfigurationError(
        f"Model config {label} has no test or validation pipeline, so its sampling, resize and crop "
        "are unknown. Add a test_pipeline with SampleFrames (or UniformSample), Resize, a crop and "
        "FormatShape."
    )


def _step(steps: list[Mapping[str, Any]], types: tuple[str, ...], label: str) -> Mapping[str, Any]:
    known = _SAMPLERS + _CROPS + _PASS_THROUGH + ("Resize",)
    for step in steps:
        if step.get("type") not in known:
            raise ConfigurationError(
                f"Model config {label}: test pipeline step {step.get('type')!r} is not supported. "
                f"Supported steps are {', '.join(known)}."
            )
    found = [step for step in steps if step.get("type") in types]
    if not found:
        raise ConfigurationError(f"Model config {label}: the test pipeline has no {' or '.join(types)} step.")
    return found[0]


def _sampling(
    steps: list[Mapping[str, Any]], backbone: Mapping[str, Any], head: Mapping[str, Any], label: str
) -> dict[str, Any]:
    """``sampler``, ``clip_len``, ``sampling_rate`` and ``target_fps`` from the sampling step."""
    step = _step(steps, _SAMPLERS, label)
    clip_len = int(step.get("clip_len", 1))
    sampler: Sampler
    if step["type"] == "UniformSample":
        return {"sampler": "uniform_sample", "clip_len": clip_len, "sampling_rate": 1}
    if clip_len == 1:
        # TSN-style: one frame per segment. A clip holds as many segments as the backbone shifts
        # across (TSM), the head relates (TRN), or the test pipeline feeds (TSN).
        segments = backbone.get("num_segments") or head.get("num_segments") or step.get("num_clips", 1)
        sampler = "segments"
        return {"sampler": sampler, "clip_len": int(segments), "sampling_rate": 1}
    target_fps = step.get("target_fps")
    return {
        "sampler": "sample_frames",
        "clip_len": clip_len,
        "sampling_rate": int(step.get("frame_interval", 1)),
        "target_fps": float(target_fps) if target_fps else None,
    }


def _short_side(steps: list[Mapping[str, Any]], label: str) -> int:
    step = _step(steps, ("Resize",), label)
    scale = step.get("scale")
    keep_ratio = step.get("keep_ratio", True)
    if (not keep_ratio or not isinstance(scale, (tuple, list)) or len(scale) != 2 or min(scale) != -1
            or step.get("interpolation", "bilinear") != "bilinear"):
        raise ConfigurationError(
            f"Model config {label}: Resize({dict(step)}) is not supported; the pipeline resizes the short "
            "side with bilinear interpolation, Resize(scale=(-1, S))."
        )
    return int(max(scale))


def _crop_size(steps: list[Mapping[str, Any]], label: str) -> int:
    size = _step(steps, _CROPS, label).get("crop_size")
    if isinstance(size, (tuple, list)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if not isinstance(size, int):
        raise ConfigurationError(f"Model config {label}: crop_size {size!r} is not a square size.")
    return size


def _input_format(steps: list[Mapping[str, Any]], model: Mapping[str, Any], label: str) -> InputFormat:
    shapes = [step.get("input_format") for step in steps if step.get("type") == "FormatShape"]
    if not shapes or shapes[0] not in ("NCTHW", "NCHW"):
        raise ConfigurationError(
            f"Model config {label}: FormatShape input_format {shapes[0] if shapes else None!r} is not "
            "supported; the pipeline feeds NCTHW clips or NCHW frames."
        )
    return shapes[0]


def _normalization(model: Mapping[str, Any], label: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The data preprocessor's mean/std, from mmaction2's 0-255 scale to the pipeline's 0-1 scale."""
    preprocessor = model.get("data_preprocessor") or {}
    mean, std = preprocessor.get("mean"), preprocessor.get("std")
    if not mean or not std or len(mean) != 3 or len(std) != 3 or preprocessor.get("to_rgb", False):
        raise ConfigurationError(
            f"Model config {label}: data_preprocessor needs a 3-channel mean and std, without "
            f"to_rgb (found mean={mean!r}, std={std!r}, to_rgb={preprocessor.get('to_rgb', False)!r})."
        )
    return tuple(m / 255.0 for m in mean), tuple(s / 255.0 for s in std)


def _pooling(head: Mapping[str, Any], input_format: InputFormat, *, has_neck: bool, label: str) -> Pooling:
    """How the head pools what it receives, or a :class:`ConfigurationError` if it does not pool."""
    kind = head.get("type")
    spatial = head.get("spatial_type", "avg")
    consensus = (head.get("consensus") or {"type": "AvgConsensus"}).get("type")
    if has_neck and kind == "TPNHead" and spatial == "avg":
        return "avg3d"  # the TPN neck returns (N, C, T, H, W) for 2-D and 3-D backbones alike
    if kind == "SlowFastHead" and spatial == "avg":
        return "slowfast"
    if kind == "MViTHead":
        return "cls_token" if head.get("with_cls_token", True) else "patch_mean"
    if kind in ("TimeSformerHead", "UniFormerHead"):
        return "identity"
    if input_format == "NCHW" and kind in _SEGMENT_HEADS and spatial == "avg" and consensus in (
        "AvgConsensus", "RelationModule", "RelationModuleMultiScale"
    ):
        return "segments2d"
    if input_format == "NCTHW" and kind in _AVG3D_HEADS:
        if spatial == "avg":
            return "avg3d"
        if spatial is None:
            return "identity"  # C3D: the backbone's fully connected layers already flatten
    raise ConfigurationError(
        f"Model config {label}: cannot pool the features its head takes ({kind} with "
        f"spatial_type={spatial!r}, consensus={consensus!r}, {input_format} input). vfx_tasks takes "
        "the head's average-pooled input; supported heads are I3DHead, X3DHead, SlowFastHead, TSNHead, "
        "TSMHead, TRNHead, TPNHead, OmniHead, TimeSformerHead, UniFormerHead and MViTHead with "
        "average pooling."
    )
