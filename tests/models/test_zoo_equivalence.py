"""The proof of the model zoo: for one config per family, vfx_tasks' features equal mmaction2's own.

Given a config and stand-in weights in mmaction2's checkpoint layout, mmaction2 builds the
recognizer (``init_recognizer``), runs the config's own test pipeline on a real sample video and
its head receives a pooled feature per clip (tests/models/mmaction_reference.py). vfx_tasks, from
the same config and file, samples the same frames and gives the same features, within
``rel <= 1e-5`` in fp32, where ``rel`` is the worst clip's ``||ours - ref|| / ||ref||``.

The families cover both input layouts (NCTHW clips, NCHW frames), every sampler (SampleFrames,
with and without target_fps, its 2-D segments, UniformSample), a neck (TPN) and every head kind.
The heavy ones (large stand-ins or slow forwards) are marked ``slow``; every family runs in the
whole suite. TIN is the one family that cannot run (tests/models/test_zoo.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tests.models.mmaction_reference import mmaction_reference
from vfx_tasks.extract.batching import BatchingLoop
from vfx_tasks.extract.pipeline import FeatureExtractor
from vfx_tasks.models import ModelSpec, get_model_spec, spec_from_config
from vfx_tasks.models.standin_checkpoint import write_standin_checkpoint
from vfx_tasks.models.zoo import configs_root

RTOL = 1e-5
VIDEO = "carphone_pristine.mp4"  # 120 frames of 176x144 at 29.97 fps: X3D's target_fps rescales

#: (family, zoo name or alias, or a config under configs/recognition; clips compared).
FAST = [
    ("x3d", "x3d-s", 2),  # SampleFrames with target_fps
    ("tsm", "tsm/tsm_imagenet-pretrained-mobilenetv2_8xb16-1x1x8-100e_kinetics400-rgb.py", 1),  # NCHW
    ("slowonly", "slowonly", 1),
    ("slowfast", "slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb", 1),
    ("videomaev2", "videomaev2-s", 1),
    ("mvit", "mvit-small-p244_k400-pre_16xb16-u16-100e_sthv2-rgb", 1),  # UniformSample, class token
    ("tanet", "tanet_imagenet-pretrained-r50_8xb8-dense-1x1x8-100e_kinetics400-rgb", 1),
    ("trn", "trn_imagenet-pretrained-r50_8xb16-1x1x8-50e_sthv2-rgb", 1),
    ("c2d", "c2d_r50-in1k-pre-nopool_8xb32-8x8x1-100e_kinetics400-rgb", 2),  # NCHW clips of 8 frames
]
SLOW = [
    ("c3d", "c3d", 2),  # the backbone flattens: the head does not pool
    ("csn", "ircsn_ig65m-pretrained-r50-bnfrozen_8xb12-32x2x1-58e_kinetics400-rgb", 1),
    ("i3d", "i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb", 1),
    ("omnisource", "slowonly_r50_8xb16-8x8x1-256e_imagenet-kinetics400-rgb", 1),
    ("r2plus1d", "r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb", 1),
    ("swin", "swin/swin-tiny-p244-w877_in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb.py", 1),
    ("timesformer", "timesformer_spaceOnly_8xb8-8x32x1-15e_kinetics400-rgb", 1),
    ("tpn", "tpn-slowonly_r50_8xb8-8x8x1-150e_kinetics400-rgb", 1),  # a neck after a 3-D backbone
    ("tpn", "tpn-tsm_imagenet-pretrained-r50_8xb8-1x1x8-150e_sthv1-rgb", 1),  # after a 2-D one
    ("tsn", "tsn", 1),  # 25 segments
    ("uniformer", "uniformer-s", 1),
    ("uniformerv2", "uniformerv2-base-p16-res224_clip_8xb32-u8_kinetics400-rgb", 1),
    ("videomae", "videomae", 1),
]


def zoo_or_config_spec(model: str, folder: Path) -> ModelSpec:
    """A zoo model by name, or a config of the wheel as a user's own config (weights in ``folder``)."""
    if model.endswith(".py"):
        config = configs_root() / "configs" / "recognition" / model
        return spec_from_config(config, folder / f"{config.stem}.pth")
    return get_model_spec(model)


def worst_relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """``max over clips of ||ours - ref|| / ||ref||``."""
    assert ours.shape == reference.shape, f"shape {ours.shape} != reference {reference.shape}"
    return float(np.max(np.linalg.norm(ours - reference, axis=-1) / np.linalg.norm(reference, axis=-1)))


def check_equal_to_mmaction2(family: str, model: str, clips: int, folder: Path, video: Path) -> None:
    # Given a model of the family and stand-in weights in mmaction2's layout
    spec = zoo_or_config_spec(model, folder)
    assert spec.family in (family, "custom")
    checkpoint = write_standin_checkpoint(spec, folder)
    # When mmaction2 and vfx_tasks each run it on the same video
    reference = mmaction_reference(spec, checkpoint, video, num_clips=clips)
    extractor = FeatureExtractor(spec, pretrained_dir=folder, device="cpu")
    ours = extractor.extract(video, crop_type="center", num_clips_per_video=clips, clip_sampling="uniform")
    # Then they sample the same frames and pool the same features
    sampled = extractor.clips_of(ours.num_frames, clips, "uniform", fps=ours.fps)
    np.testing.assert_array_equal(sampled, reference.frame_inds)
    assert ours.features.shape == (len(sampled), 1, spec.feature_dim)
    rel = worst_relative_error(ours.features[:, 0], reference.features)
    assert rel <= RTOL, f"{spec.name}: rel {rel:.2e} > {RTOL}"


@pytest.mark.parametrize(("family", "model", "clips"), FAST, ids=[entry[0] for entry in FAST])
def test_features_equal_mmaction2s_own(
    family: str, model: str, clips: int, tmp_path: Path, sample_videos_dir: Path
) -> None:
    check_equal_to_mmaction2(family, model, clips, tmp_path, sample_videos_dir / VIDEO)


@pytest.mark.slow
@pytest.mark.parametrize(("family", "model", "clips"), SLOW, ids=[f"{e[0]}-{e[1][:12]}" for e in SLOW])
def test_heavy_families_equal_mmaction2s_own(
    family: str, model: str, clips: int, tmp_path: Path, sample_videos_dir: Path
) -> None:
    check_equal_to_mmaction2(family, model, clips, tmp_path, sample_videos_dir / VIDEO)


def test_every_runnable_family_is_proven() -> None:
    from vfx_tasks.models import zoo_families

    proven = {family for family, _, _ in FAST + SLOW}
    assert proven == set(zoo_families()) - {"tin"}
    assert len({family for family, _, _ in FAST}) >= 8


def test_mmaction2s_geometry_is_what_makes_them_equal(tmp_path: Path, sample_videos_dir: Path) -> None:
    """A control: the original tool's resize and crop (antialiased, rounded half to even) on the
    same model and frames are visibly off, so the equality above is not a loose comparison."""
    spec = get_model_spec("x3d-s")
    checkpoint = write_standin_checkpoint(spec, tmp_path)
    video = sample_videos_dir / VIDEO
    reference = mmaction_reference(spec, checkpoint, video, num_clips=1)
    torchvision_like = dataclasses.replace(spec, preprocessing="torchvision")
    extractor = FeatureExtractor(torchvision_like, pretrained_dir=tmp_path, device="cpu")
    ours = extractor.extract(video, crop_type="center", num_clips_per_video=1, clip_sampling="uniform")
    assert worst_relative_error(ours.features[:, 0], reference.features) > 10 * RTOL


def test_a_2d_model_batched_across_videos_equals_one_video_at_a_time(
    tmp_path: Path, sample_videos_dir: Path
) -> None:
    """NCHW frames of clips from several videos share forwards; each video's features are its own."""
    spec = zoo_or_config_spec(FAST[1][1], tmp_path)
    write_standin_checkpoint(spec, tmp_path)
    extractor = FeatureExtractor(spec, pretrained_dir=tmp_path, device="cpu")
    videos = [sample_videos_dir / name for name in ("carphone_pristine.mp4", "bikes.mp4")]
    alone = [extractor.extract(v, crop_type="center", num_clips_per_video=3).features for v in videos]
    loop = BatchingLoop(extractor, batch_clip_crops=2, inference_threads=1)
    try:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            batched = list(pool.map(
                lambda v: loop.extract(v, crop_type="center", num_clips_per_video=3).features, videos
            ))
    finally:
        loop.close()
    assert loop.stats.shared_forwards >= 1
    for one, many in zip(alone, batched, strict=True):
        assert one.shape == (3, 1, 1280)
        assert worst_relative_error(many.reshape(-1, 1280), one.reshape(-1, 1280)) <= RTOL
