"""A task message is untrusted: crafted ``vfx.extract_video`` messages fail permanently, write nothing.

Messages are sent with ``app.send_task``, as Flower's ``/api/task/async-apply`` or anyone holding
the Redis password would, to one real worker whose roots are ``in/`` (videos) and ``out/``
(features). One worker serves every case, so the model is loaded once.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery.states import READY_STATES

from tests.conftest import WorkerProcess, run_cli, wait_until, write_test_video
from tests.helpers import ENQUEUE, files_under
from vfx_tasks.errors import ConfigurationError
from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.queue.app import EXTRACT_VIDEO_TASK, create_app
from vfx_tasks.queue.job import Run, ledger_key
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.processes.cluster import LocalCluster
from vfx_tasks.queue.worker.message import MAX_LABELS_BYTES, MAX_LABELS_DEPTH
from vfx_tasks.settings import Settings

pytestmark = pytest.mark.slow

RELATIVE_ID_CASES = ["", ".", "../x", "/etc/x", "a/../../x", "a\\..\\x", "a//b", "a/\x00b"]
COMMIT = "0" * 40


def own_run_id(kwargs: dict[str, Any]) -> str:
    """The run id a message's folder and settings name (what a producer would send), if they name one."""
    try:
        return Run(kwargs["output_dir"], Recipe.from_mapping(kwargs)).run_id
    except (ConfigurationError, KeyError, TypeError):
        return "crafted"


def nested(depth: int) -> dict[str, Any]:
    labels: dict[str, Any] = {}
    for _ in range(depth - 1):
        labels = {"x": labels}
    return labels


def test_crafted_messages_fail_permanently_with_the_setting_to_change_and_write_nothing(
    tmp_path: Path, redis_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    inputs, out, home = tmp_path / "in", tmp_path / "out", tmp_path / "home"
    video = write_test_video(inputs / "v.mp4", width=96, height=64, num_frames=16)
    outside_video = home / "v.mp4"
    home.mkdir()
    shutil.copy(video, outside_video)
    out.mkdir()
    (out / "link").symlink_to(home, target_is_directory=True)
    before = set(files_under(tmp_path))
    base = {
        "video_path": str(video), "output_dir": str(out), "model": "i3d",
        "crop_type": "center", "clip_sampling": "sequential", "num_clips_per_video": 1,
        "batch_size": 16, "precision": "fp32", "labels": None,
    }
    # (changed arguments, what the recorded reason must say); each case has its own relative_id.
    cases: list[tuple[dict[str, Any], str]] = [
        # The reported attack: labels written as .json into another user's configuration folder.
        ({"output_dir": str(home / ".config"), "labels": {"evil": True}}, "is not under VFX_OUTPUT_ROOTS"),
        ({"output_dir": str(out / "link")}, "is not under VFX_OUTPUT_ROOTS"),
        ({"relative_id": "link/escape"}, "outside output_dir"),
        ({"video_path": str(outside_video)}, "is not under VFX_INPUT_ROOTS"),
        ({"video_path": "/etc/passwd"}, "is not under VFX_INPUT_ROOTS"),
        ({"video_path": "hf://datasets/a/b@main/../../x.mp4"}, "video_path"),
        # A revision huggingface_hub would keep as the file refs/<revision>, outside its cache.
        ({"video_path": "hf://datasets/owner/data@..%2F..%2Fx/v.mp4"}, "Refusing revision '../../x'"),
        ({"video_path": f"hf://datasets/someone/else@{COMMIT}/v.mp4"}, "not in VFX_HF_REPOS (owner/*)"),
        # Names no file system takes: refused here, not failed later as ENAMETOOLONG and retried.
        ({"relative_id": "a" * 300}, "relative_id holds a name of 300 bytes"),
        ({"relative_id": "é" * 128 + "/v"}, "relative_id holds a name of 256 bytes"),
        ({"relative_id": "a" * 230}, "ends in a name longer than 200 bytes"),  # room for .npy, temporaries
        ({"output_dir": str(out / ("d" * 256))}, "output_dir holds a name of 256 bytes"),
        ({"labels": {"x": "a" * MAX_LABELS_BYTES}}, "labels take"),
        ({"labels": nested(MAX_LABELS_DEPTH + 1)}, "nested deeper"),
        ({"labels": ["not", "an", "object"]}, "labels must be a JSON object"),
        ({"batch_size": 0}, "batch_size (0)"),
        ({"num_clips_per_video": 10**9}, "num_clips_per_video"),
        ({"batch_size": True}, "batch_size must be a whole number"),
        ({"crop_type": "bogus"}, "crop_type"),
        ({"decoder": "ffmpeg; rm -rf /"}, "decoder"),
        ({"model": "resnet"}, "Unknown model"),
        ({"output_dir": ["not", "a", "path"]}, "output_dir must be a string"),
        *(({"relative_id": relative_id}, "relative_id") for relative_id in RELATIVE_ID_CASES),
    ]
    # Given a worker reading under in/ and writing under out/ only, fetching from owner/'s datasets
    # only (and no retries to wait for),
    worker = start_worker(
        VFX_INPUT_ROOTS=str(inputs), VFX_OUTPUT_ROOTS=str(out), VFX_MAX_RETRIES="0", VFX_HF_REPOS="owner/*"
    )
    app = create_app(Settings.from_env({}, broker_url=redis_url))
    ledger = Ledger.from_url(redis_url)
    base_run = Run(str(out), Recipe.from_mapping(base))
    # when crafted messages are sent (each with the run id its folder and settings name), then a
    # well-formed one,
    sent = []
    for index, (changes, reason) in enumerate(cases):
        kwargs = {**base, "relative_id": f"case{index}", **changes}
        kwargs.setdefault("run_id", own_run_id(kwargs))
        sent.append((app.send_task(EXTRACT_VIDEO_TASK, kwargs=kwargs), kwargs, reason))
    # and messages the ledger cannot even file (no string run or video id, an unknown argument),
    own = base_run.run_id
    unrecordable = [
        app.send_task(EXTRACT_VIDEO_TASK, kwargs={**base, "relative_id": ["a", "list"], "run_id": own}),
        app.send_task(EXTRACT_VIDEO_TASK, kwargs={**base, "relative_id": "r", "run_id": 7}),
        app.send_task(EXTRACT_VIDEO_TASK, kwargs={**base, "relative_id": "u", "surprise": 1}),
    ]
    good_kwargs = {**base, "relative_id": "ok/v", "labels": {"a": 1}, "run_id": own}
    good = app.send_task(EXTRACT_VIDEO_TASK, kwargs=good_kwargs)
    results = [result for result, _, _ in sent] + unrecordable + [good]
    wait_until(lambda: all(r.state in READY_STATES for r in results), f"every task to end:\n{worker.log()}")
    # then each crafted one failed at once with a reason naming what to change, in the result
    # backend and among the refused messages,
    for result, kwargs, reason in sent:
        assert result.state == "FAILURE", (kwargs, result.state, result.result)
        assert reason in str(result.result), (kwargs, str(result.result))
    _, refusals = ledger.refusals()
    refused = {refusal["task_id"]: refusal for refusal in refusals}
    for result, kwargs, reason in sent:
        recorded = refused[result.id]
        assert recorded["code"] == "untrusted_message" and reason in recorded["message"], (kwargs, recorded)
    assert "(see docs/deployment.md#trusted-folders)" in refused[sent[0][0].id]["message"]
    # and, for the well-formed ones (in their own run), as the video's failure too (so that --wait
    # reports them),
    failed = ledger.entries(base_run.run_id, "failed")
    for _, kwargs, reason in sent:
        if ledger_key(kwargs) == (base_run.run_id, kwargs["relative_id"]):
            assert reason in failed[kwargs["relative_id"]]["message"], (kwargs, failed)
    assert {"case3", "case4"} <= set(failed)  # videos outside VFX_INPUT_ROOTS
    # the unrecordable ones failed too, filed among the refused only, and the worker carried on,
    assert [result.state for result in unrecordable] == ["FAILURE"] * 3
    assert all(refused[result.id]["code"] == "untrusted_message" for result in unrecordable)
    # nothing was written anywhere but the well-formed task's outputs, and nothing was retried,
    assert good.state == "SUCCESS", good.result
    written = set(files_under(tmp_path)) - before - {"worker-0.log"}
    assert written == {"out/ok/v.npy", "out/ok/v.json", "out/index.csv"}
    assert "Retry in" not in worker.log()


def test_local_workers_accept_the_folders_they_were_given(tmp_path: Path, queue_env: dict[str, str]) -> None:
    # Given no VFX_*_ROOTS anywhere (a user who never heard of them),
    unset = ("VFX_BROKER_URL", "VFX_INPUT_ROOTS", "VFX_OUTPUT_ROOTS")
    env = {k: v for k, v in queue_env.items() if k not in unset}
    inputs, out = tmp_path / "in", tmp_path / "out"
    write_test_video(inputs / "sub" / "v.mp4", width=96, height=64, num_frames=16)
    # when a folder is extracted with --local, its workers accept that input and output folder,
    cluster = LocalCluster(Settings.from_env(env), output_dir=out, input_dir=inputs)
    shutil.rmtree(cluster.log_dir)
    assert cluster.worker_settings().input_roots == (inputs.resolve(),)
    assert cluster.worker_settings().output_roots == (out.resolve(),)
    result = run_cli(
        ENQUEUE, "--local", "--input_dir", str(inputs), "--output_dir", str(out),
        "--crop_type", "center", "--num_clips_per_video", "1", "--poll_seconds", "0.2", env=env,
    )
    # and the run ends with every video done.
    assert result.returncode == 0, result.stderr
    assert (out / "sub" / "v.npy").is_file()
