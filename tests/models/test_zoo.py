"""The model zoo: names from the wheel's metafiles, specs read from configs, and the errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from vfx_tasks.errors import (
    CheckpointMismatchError,
    ConfigurationError,
    DependencyError,
    UnknownModelError,
)
from vfx_tasks.models import (
    DEFAULT_MODEL,
    MODEL_SPECS,
    get_model_spec,
    model_names,
    resolve_model,
    spec_from_config,
    zoo_entries,
    zoo_families,
)
from vfx_tasks.models.backbone import load_backbone
from vfx_tasks.models.spec import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from vfx_tasks.models.standin_checkpoint import write_standin_checkpoint
from vfx_tasks.models.zoo import ZOO_ALIASES, configs_root

FAMILIES = {
    "c2d", "c3d", "csn", "i3d", "mvit", "omnisource", "r2plus1d", "slowfast", "slowonly", "swin", "tanet",
    "timesformer", "tin", "tpn", "trn", "tsm", "tsn", "uniformer", "uniformerv2", "videomae", "videomaev2",
    "x3d",
}
RECOGNITION = configs_root() / "configs" / "recognition"
X3D_CONFIG = RECOGNITION / "x3d" / "x3d_s_13x6x1_facebook-kinetics400-rgb.py"


def test_every_recognizer_family_of_the_wheel_is_listed() -> None:
    assert set(zoo_families()) == FAMILIES
    assert len(zoo_entries()) > 100
    zoo = set(model_names(zoo=True))
    assert "x3d_s_13x6x1_facebook-kinetics400-rgb" in zoo
    assert "vit-base-p16_videomae-k400-pre_16x4x1_kinetics-400" in zoo
    assert set(ZOO_ALIASES.values()) <= set(zoo_entries()), "an alias names no zoo model"
    assert not set(ZOO_ALIASES) & set(zoo_entries()), "an alias hides a zoo name"


def test_seed_names_aliases_and_values_are_unchanged() -> None:
    i3d, swin = MODEL_SPECS.values()
    assert DEFAULT_MODEL == i3d.name
    for name in (i3d.name, "i3d", "i3d-r50-nl"):
        assert get_model_spec(name) is i3d
    for name in (swin.name, "swin-t", "swin-tiny", "swin"):
        assert get_model_spec(name) is swin
    for spec, dim in ((i3d, 2048), (swin, 768)):
        assert (spec.clip_len, spec.sampling_rate, spec.clip_span_frames) == (32, 2, 64)
        assert (spec.resize_short_side, spec.crop_size, spec.feature_dim) == (256, 224, dim)
        assert (spec.mean_rgb, spec.std_rgb) == (IMAGENET_MEAN_RGB, IMAGENET_STD_RGB)
        # The original tool's sampling and torchvision geometry, not the configs' test pipelines.
        assert (spec.sampler, spec.preprocessing) == ("video_features", "torchvision")
        assert spec.input_format == "NCTHW"
        assert spec.config_name is None and spec.config_sha256 is None
    assert i3d.channels_last_3d and not swin.channels_last_3d
    assert model_names(with_aliases=True) == [
        i3d.name, swin.name, "i3d", "i3d-r50-nl", "swin-t", "swin-tiny", "swin"
    ]


def test_a_zoo_spec_is_read_from_its_config() -> None:
    spec = get_model_spec("x3d-s")
    assert spec is get_model_spec("x3d_s_13x6x1_facebook-kinetics400-rgb")
    assert (spec.family, spec.input_format) == ("x3d", "NCTHW")
    assert (spec.sampler, spec.pooling) == ("sample_frames", "avg3d")
    assert (spec.clip_len, spec.sampling_rate, spec.target_fps) == (13, 6, 30.0)
    assert (spec.resize_short_side, spec.crop_size, spec.feature_dim) == (182, 182, 432)
    assert spec.mean_rgb == pytest.approx((114.75 / 255,) * 3)
    assert spec.std_rgb == pytest.approx((57.38 / 255,) * 3)
    assert spec.preprocessing == "mmaction2" and spec.backbone_config["type"] == "X3D"
    assert spec.config_name == "configs/recognition/x3d/x3d_s_13x6x1_facebook-kinetics400-rgb.py"
    assert len(spec.config_sha256) == 64
    assert spec.checkpoint_url.startswith("https://download.openmmlab.com/mmaction/v1.0/recognition/x3d/")
    assert spec.checkpoint_sha256_prefix == "623825a0"
    assert spec.input_shape == (3, 13, 182, 182)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tsm", dict(input_format="NCHW", sampler="segments", clip_len=8, pooling="segments2d")),
        ("tsn", dict(input_format="NCHW", sampler="segments", clip_len=25, crop_size=224, feature_dim=2048)),
        ("slowfast", dict(pooling="slowfast", feature_dim=2304, clip_len=32, sampling_rate=2)),
        ("videomae-b", dict(pooling="identity", feature_dim=768, clip_len=16, sampling_rate=4)),
        ("uniformerv2-b", dict(sampler="uniform_sample", clip_len=8, clip_span_frames=0, feature_dim=768)),
        ("mvit-s", dict(pooling="cls_token", feature_dim=768)),
        ("tpn-tsm_imagenet-pretrained-r50_8xb8-1x1x8-150e_sthv1-rgb",
         dict(input_format="NCHW", pooling="avg3d", neck_type="TPN")),
        ("i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb", dict(feature_dim=2048)),
    ],
)
def test_config_values_per_family(name: str, expected: dict) -> None:
    spec = get_model_spec(name)
    for key, value in expected.items():
        actual = (spec.neck_config or {}).get("type") if key == "neck_type" else getattr(spec, key)
        assert actual == value, f"{name}: {key} = {actual!r}, expected {value!r}"


def _run_python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_listing_names_imports_neither_torch_nor_mmaction_nor_any_config() -> None:
    result = _run_python("""
        import json, sys
        opened = []
        sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
        from vfx_tasks.models import model_names
        names = model_names(with_aliases=True, zoo=True)
        print(json.dumps({"names": len(names), "modules": [m for m in ("torch", "mmaction", "mmengine")
                          if m in sys.modules], "configs": [p for p in opened if p.endswith(".py")
                          and "/configs/recognition/" in p]}))
    """)
    assert result["names"] > 120
    assert result["modules"] == [] and result["configs"] == []


def test_reading_one_models_spec_reads_only_its_own_config_and_bases() -> None:
    result = _run_python("""
        import json, sys
        opened = []
        sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
        from vfx_tasks.models import get_model_spec
        get_model_spec("x3d-s")
        configs = sorted({p for p in opened if "/.mim/configs/" in p and p.endswith(".py")})
        print(json.dumps({"configs": configs, "torch": "torch" in sys.modules,
                          "mmaction": "mmaction" in sys.modules}))
    """)
    folders = {Path(path).parent.name for path in result["configs"]}
    assert "x3d" in folders and folders <= {"x3d", "models", "_base_"}, result["configs"]
    assert not result["torch"] and not result["mmaction"]


def test_unknown_name_is_refused_with_close_names() -> None:
    with pytest.raises(UnknownModelError, match=r"Unknown model \('x3d-ss'\).*Did you mean x3d-s"):
        get_model_spec("x3d-ss")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("tin_kinetics400-pretrained-tsm-r50_1x1x8-50e_kinetics400-rgb", "mmcv.ops.tin_shift"),
        ("tsm_imagenet-pretrained-mobileone-s4_8xb16-1x1x16-50e_kinetics400-rgb", "mmpretrain"),
        ("tsn_imagenet-pretrained-dense161_8xb32-1x1x3-100e_kinetics400-rgb", "torchvision.densenet161"),
    ],
)
def test_families_that_cannot_run_here_say_why(name: str, reason: str) -> None:
    with pytest.raises(DependencyError, match=rf"{name}.*cannot run here: .*{reason}"):
        get_model_spec(name)


def write_config(folder: Path, text: str, name: str = "my_model.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_users_config_with_its_checkpoint(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"_base_ = ['{X3D_CONFIG}']\nmodel = dict(backbone=dict(gamma_d=1.0))\n")
    spec = resolve_model(config=config, checkpoint=tmp_path / "weights.pth")
    assert (spec.name, spec.family, spec.config_name) == ("my_model", "custom", "my_model.py")
    assert spec.checkpoint_file == str(tmp_path / "weights.pth") and spec.checkpoint_filename == "weights.pth"
    assert spec.config_sha256 != get_model_spec("x3d-s").config_sha256  # the merged config differs
    url = resolve_model(config=config, checkpoint="https://example.org/w/x3d_20201027-623825a0.pth")
    assert url.checkpoint_file is None and url.checkpoint_sha256_prefix == "623825a0"
    with pytest.raises(ConfigurationError, match="not a mix"):
        resolve_model("x3d-s", config=config, checkpoint=tmp_path / "weights.pth")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model = dict(type='Recognizer3D', backbone=dict(type='X3D'),\n", "Cannot read model config"),
        ("model = dict(type='ImageClassifier')\n", "not a video recognizer"),
        (f"_base_ = ['{X3D_CONFIG}']\nmodel = dict(cls_head=dict(type='FeatureHead'))\n",
         "my_model.py: cannot pool the features its head takes \\(FeatureHead"),
        (f"_base_ = ['{X3D_CONFIG}']\nmodel = dict(cls_head=dict(spatial_type='max'))\n",
         "cannot pool .*spatial_type='max'"),
        (f"_base_ = ['{X3D_CONFIG}']\ntest_pipeline = [dict(type='DecordInit'), dict(type='SampleFrames', "
         "clip_len=4), dict(type='DecordDecode'), dict(type='Resize', scale=(224, 224), keep_ratio=False), "
         "dict(type='CenterCrop', crop_size=224), dict(type='FormatShape', input_format='NCTHW')]\n"
         "test_dataloader = dict(dataset=dict(pipeline=test_pipeline))\n", "Resize.* is not supported"),
    ],
    ids=["syntax", "not-a-recognizer", "head-without-pooling", "max-pooling", "fixed-size-resize"],
)
def test_configs_the_pipeline_cannot_reproduce_are_refused_by_name(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        spec_from_config(write_config(tmp_path, text), tmp_path / "w.pth")


def test_a_config_mmaction2_cannot_build_is_refused_by_name(tmp_path: Path) -> None:
    text = f"_base_ = ['{X3D_CONFIG}']\nmodel = dict(backbone=dict(type='NoSuchNet'))\n"
    spec = spec_from_config(write_config(tmp_path, text), tmp_path / "w.pth")
    torch.save({"state_dict": {"backbone.conv.weight": torch.zeros(1)}}, tmp_path / "w.pth")
    with pytest.raises(ConfigurationError, match="cannot build the backbone of model my_model .*NoSuchNet"):
        load_backbone(spec, tmp_path)


def test_a_checkpoint_of_another_model_is_refused_naming_config_and_keys(tmp_path: Path) -> None:
    # Given a checkpoint of TSM-MobileNetV2 saved where X3D-S's should be
    tsm_config = RECOGNITION / "tsm" / (
        "tsm_imagenet-pretrained-mobilenetv2_8xb16-1x1x8-100e_kinetics400-rgb.py"
    )
    tsm = spec_from_config(tsm_config, tmp_path / "tsm.pth")
    x3d = get_model_spec("x3d-s")
    write_standin_checkpoint(tsm, tmp_path).rename(tmp_path / x3d.checkpoint_filename)
    # Then loading X3D-S strictly names the config and the keys that do not fit
    with pytest.raises(CheckpointMismatchError, match=r"x3d_s_13x6x1.*config configs/recognition/x3d/x3d_s.*"
                                                      r"missing: backbone\..*unexpected: backbone\."):
        load_backbone(x3d, tmp_path)


def test_metafile_entries_with_wrong_config_names_find_their_files() -> None:
    entries = zoo_entries()
    # "Config" without ".py", with ".py.py", and an entry whose "Config" is another model's file.
    for name in ("tsm_imagenet-pretrained-r50_8xb16-1x1x8-100e_kinetics400-rgb",
                 "swin-base-p244-w877_in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb",
                 "mvit-small-p244_k400-pre_16xb16-u16-100e_sthv2-rgb"):
        assert entries[name].config_file is not None and entries[name].config_file.name == f"{name}.py"
    assert get_model_spec("mvit-small-p244_k400-pre_16xb16-u16-100e_sthv2-rgb").sampler == "uniform_sample"
    missing = entries["uniformerv2-base-p16-res224_clip-pre_8xb32-u8_kinetics700-rgb"]
    assert missing.config_file is None
    tpn_tsm = entries["tpn-tsm_imagenet-pretrained-r50_8xb8-1x1x8-150e_sthv1-rgb"]
    assert tpn_tsm.weights_url.startswith("https://download.openmmlab.com/")  # "(https://" in the metafile
    with pytest.raises(ConfigurationError, match="wheel lacks its config"):
        get_model_spec(missing.name)
