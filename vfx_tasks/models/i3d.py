"""I3D ResNet-50 with dot-product non-local blocks, Kinetics-400 (2048-d features)."""

from __future__ import annotations

from vfx_tasks.models.spec import ModelSpec

_NAME = "i3d_imagenet-pretrained-r50-nl-dot-product_8xb8-32x2x1-100e_kinetics400-rgb"
_CHECKPOINT = f"{_NAME}_20220812-8e1f2148.pth"

I3D_R50_NL = ModelSpec(
    name=_NAME,
    aliases=("i3d", "i3d-r50-nl"),
    # configs/_base_/models/i3d_r50.py merged with the model's own config.
    backbone_config={
        "type": "ResNet3d",
        "pretrained2d": True,
        "pretrained": None,  # the zoo config names torchvision://resnet50; weights come from ours
        "depth": 50,
        "conv1_kernel": (5, 7, 7),
        "conv1_stride_t": 2,
        "pool1_stride_t": 2,
        "conv_cfg": {"type": "Conv3d"},
        "norm_eval": False,
        "inflate": ((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0)),
        "zero_init_residual": False,
        "non_local": ((0, 0, 0), (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), (0, 0, 0)),
        "non_local_cfg": {
            "sub_sample": True,
            "use_scale": False,
            "norm_cfg": {"type": "BN3d", "requires_grad": True},
            "mode": "dot_product",
        },
    },
    feature_dim=2048,
    channels_last_3d=True,
    checkpoint_filename=_CHECKPOINT,
    family="i3d",
    checkpoint_url=f"https://download.openmmlab.com/mmaction/v1.0/recognition/i3d/{_NAME}/{_CHECKPOINT}",
)
