"""Video Swin Transformer, tiny, patch (2, 4, 4), window (8, 7, 7), Kinetics-400 (768-d)."""

from __future__ import annotations

from vfx_tasks.models.spec import ModelSpec

_NAME = "swin-tiny-p244-w877_in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb"
_CHECKPOINT = f"{_NAME}_20220930-241016b2.pth"

SWIN_TINY = ModelSpec(
    name=_NAME,
    aliases=("swin-t", "swin-tiny", "swin"),
    # configs/_base_/models/swin_tiny.py merged with the model's own config.
    backbone_config={
        "type": "SwinTransformer3D",
        "arch": "tiny",
        "pretrained": None,  # the zoo config names ImageNet weights; ours are loaded afterwards
        "pretrained2d": True,
        "patch_size": (2, 4, 4),
        "window_size": (8, 7, 7),
        "mlp_ratio": 4.0,
        "qkv_bias": True,
        "qk_scale": None,
        "drop_rate": 0.0,
        "attn_drop_rate": 0.0,
        "drop_path_rate": 0.1,  # training only: eval mode turns stochastic depth off
        "patch_norm": True,
    },
    feature_dim=768,
    checkpoint_filename=_CHECKPOINT,
    family="swin",
    checkpoint_url=f"https://download.openmmlab.com/mmaction/v1.0/recognition/swin/{_NAME}/{_CHECKPOINT}",
)
