"""A 2-D model-zoo model through ``vfx-enqueue --local``: the features the extractor gives on its own,
the config in the manifest, the model's own clip starts in the index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PROCESS_TIMEOUT_SECONDS, run_cli, write_test_video
from tests.helpers import ENQUEUE
from vfx_tasks.extract.pipeline import FeatureExtractor
from vfx_tasks.extract.sampling import clip_frame_indices
from vfx_tasks.models import ModelSpec, get_model_spec, resolve_model
from vfx_tasks.models.standin_checkpoint import write_standin_checkpoint
from vfx_tasks.outputs.index import read_index
from vfx_tasks.outputs.manifest import read_manifest

pytestmark = pytest.mark.slow

FRAMES, FPS, CLIPS = 50, 25.0, 2


def tsm_model(tmp_path: Path, kind: str) -> tuple[ModelSpec, list[str]]:
    """TSM (ResNet-50, temporal shift) with stand-in weights: from the zoo by name, or a user's config
    of it over 4 segments; its spec and the ``vfx-enqueue`` options that name it."""
    pretrained = tmp_path / "pretrained"
    if kind == "zoo":
        spec = get_model_spec("tsm")
        write_standin_checkpoint(spec, pretrained)
        return spec, ["--model", "tsm", "--pretrained_dir", str(pretrained)]
    config = tmp_path / "configs" / "my_tsm.py"
    config.parent.mkdir()
    config.write_text(
        f"_base_ = ['{get_model_spec('tsm').config_path}']\n"
        "model = dict(backbone=dict(num_segments=4), cls_head=dict(num_segments=4))\n"
    )
    unpinned = resolve_model(config=config, checkpoint="unused.pth")
    weights = write_standin_checkpoint(unpinned, tmp_path / "weights")
    spec = resolve_model(config=config, checkpoint=weights)
    return spec, ["--model-config", str(config), "--checkpoint", str(weights),
                  "--pretrained_dir", str(pretrained)]


@pytest.mark.parametrize("kind", ["zoo", "own-config"])
def test_a_2d_model_runs_through_the_local_queue_as_on_its_own(
    tmp_path: Path, queue_env: dict[str, str], kind: str
) -> None:
    # Given a tiny video and TSM with stand-in weights (by zoo name, or a user's own config and weights),
    video = write_test_video(tmp_path / "videos" / "v.mp4", width=64, height=48, num_frames=FRAMES, fps=FPS)
    spec, model_options = tsm_model(tmp_path, kind)
    out = tmp_path / "out"
    # when the folder is extracted with --local, two windows of the video, centre crops,
    result = run_cli(
        ENQUEUE, "--local", "--input_dir", str(video.parent), "--output_dir", str(out), *model_options,
        "--crop_type", "center", "--num_clips_per_video", str(CLIPS), "--poll_seconds", "0.2",
        "--wait-timeout", str(PROCESS_TIMEOUT_SECONDS),
        env={k: v for k, v in queue_env.items() if k != "VFX_BROKER_URL"},
        timeout=PROCESS_TIMEOUT_SECONDS + 60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 done, 0 failed of 1" in result.stderr
    # then the features are those the extractor computes on its own,
    features = np.load(out / "v.npy")
    expected = FeatureExtractor(spec, pretrained_dir=tmp_path / "pretrained", device="cpu").extract(
        video, crop_type="center", num_clips_per_video=CLIPS
    )
    assert features.shape == expected.features.shape == (CLIPS, 1, 2048)
    assert np.linalg.norm(features - expected.features) <= 1e-5 * np.linalg.norm(expected.features)
    # the manifest records the config, its sampler and its clips' span (0: each covers a window),
    facts = read_manifest(out).settings.facts  # type: ignore[union-attr]
    assert (facts.config_name, facts.config_sha256) == (spec.config_name, spec.config_sha256)
    assert (facts.sampler, facts.clip_len, facts.clip_span_frames) == ("segments", spec.clip_len, 0)
    # and the index's clip starts are the frames the model's sampler took first in each window.
    row = read_index(out)["v"]
    starts = clip_frame_indices(spec, FRAMES, fps=FPS, num_clips_per_video=CLIPS)[:, 0]
    assert (row.frames, row.clip_span_frames) == (FRAMES, 0)
    assert row.clip_start_frames == tuple(int(i) for i in starts) and starts[1] >= FRAMES // CLIPS
