"""``vfx-enqueue`` with a model-zoo name or a user's own config, against a real Redis without workers:
what cannot work stops with exit 2 before anything is queued; what can is queued pinned."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from tests.helpers import enqueue_in_process, write_fake_videos
from tests.models.test_user_model import X3D_CONFIG
from vfx_tasks.cli.enqueue import main
from vfx_tasks.models import get_model_spec
from vfx_tasks.models.standin_checkpoint import write_standin_checkpoint
from vfx_tasks.outputs.manifest import read_manifest
from vfx_tasks.queue.job import Run
from vfx_tasks.queue.ledger import Ledger


@pytest.fixture(scope="module")
def x3d_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_standin_checkpoint(get_model_spec("x3d-s"), tmp_path_factory.mktemp("x3d-weights"))


def write_config(folder: Path, body: str = "") -> Path:
    """``folder/my_x3d.py``: the wheel's X3D-S config with ``body`` on top."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "my_x3d.py"
    config.write_text(f"_base_ = ['{X3D_CONFIG}']\n{body}")
    return config


def enqueue(redis_url: str, tmp_path: Path, *args: str) -> tuple[int, str]:
    videos = tmp_path / "in"
    write_fake_videos(videos, ["a.mp4", "b.mp4"])
    result = enqueue_in_process(
        redis_url, "--input_dir", str(videos), "--output_dir", str(tmp_path / "out"), "--crop_type", "center",
        "--pretrained_dir", str(tmp_path / "pretrained"), *args,
    )  # fmt: skip
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("cannot-build", r"mmaction2 cannot build the backbone of model my_x3d \(my_x3d.py\): .*NoSuchNet"),
        ("keys-do-not-fit", r"does not fit the 'my_x3d' backbone \(config my_x3d.py\).*wrong shape: "),
        ("unknown-name", r"Unknown model \('x3d-xxl'\).*Did you mean"),
        ("no-such-config", r"Model config .*nowhere.py does not exist"),
        ("name-and-config", r"Give either a model name \(--model x3d_s_13x6x1"),
        ("checkpoint-alone", "--checkpoint is the weights of --model-config"),
        ("config-alone", "model_config needs its weights"),
    ],
)
def test_what_cannot_work_stops_with_exit_2_and_queues_nothing(
    redis_url: str, tmp_path: Path, x3d_weights: Path, case: str, message: str
) -> None:
    config = write_config(tmp_path / "configs", {
        "cannot-build": "model = dict(backbone=dict(type='NoSuchNet'))\n",
        "keys-do-not-fit": "model = dict(backbone=dict(gamma_w=2))\n",  # wider layers than the weights
    }.get(case, ""))
    own = ["--model-config", str(config), "--checkpoint", str(x3d_weights)]
    args = {
        "cannot-build": own,
        "keys-do-not-fit": own,
        "unknown-name": ["--model", "x3d-xxl"],
        "no-such-config": ["--model-config", str(tmp_path / "nowhere.py"), "--checkpoint", str(x3d_weights)],
        "name-and-config": ["--model", "x3d", *own],
        "checkpoint-alone": ["--model", "x3d", "--checkpoint", str(x3d_weights)],
        "config-alone": ["--model-config", str(config)],
    }[case]
    code, output = enqueue(redis_url, tmp_path, *args)
    assert code == 2, output
    assert "Error:" in output and "Traceback" not in output
    assert len(re.findall(message, output.replace("\n", " "))) == 1, output
    assert Ledger.from_url(redis_url).runs() == [] and redis.Redis.from_url(redis_url).llen("vfx") == 0
    assert not (tmp_path / "out").exists()  # not even a manifest


def test_a_users_config_is_queued_pinned_and_recorded(
    redis_url: str, tmp_path: Path, x3d_weights: Path
) -> None:
    # Given a user's config and weights, when its videos are queued,
    config = write_config(tmp_path / "configs")
    own = ["--model-config", str(config), "--checkpoint", str(x3d_weights)]
    code, output = enqueue(redis_url, tmp_path, *own)
    assert code == 0 and "Queued 2 of 2" in output, output
    # then each message carries both files' sha256,
    messages = [json.loads(raw) for raw in redis.Redis.from_url(redis_url).lrange("vfx", 0, -1)]
    kwargs = [json.loads(base64.b64decode(m["body"]))[1] for m in messages]
    assert {k["model"] for k in kwargs} == {"my_x3d"} and {k["model_config"] for k in kwargs} == {str(config)}
    assert all(len(k["model_config_sha256"]) == len(k["checkpoint_sha256"]) == 64 for k in kwargs)
    # the manifest names the config and its resolved hash (the zoo's X3D-S's: it changes nothing), with
    # the weights' hash,
    facts = read_manifest(tmp_path / "out").settings.facts  # type: ignore[union-attr]
    assert (facts.config_name, facts.sampler, facts.checkpoint_sha256) == (
        "my_x3d.py", "sample_frames", kwargs[0]["checkpoint_sha256"])
    assert facts.config_sha256 == get_model_spec("x3d-s").config_sha256
    # and the ledger describes the run so that recovery finds its task ids again.
    [meta] = Ledger.from_url(redis_url).runs()
    run = Run.from_meta(meta)
    assert run is not None and run.recipe.model_config == str(config)


def test_help_names_popular_zoo_models_and_where_to_find_the_rest() -> None:
    output = CliRunner().invoke(main, ["--help"], terminal_width=80).output
    model_help = " ".join(output[output.index("--model TEXT"):output.index("--crop_type")].split())
    assert "x3d, slowfast, tsm, videomae" in model_help and "vfx-models" in model_help
    assert "--model_config TEXT" in output and "--checkpoint TEXT" in output
