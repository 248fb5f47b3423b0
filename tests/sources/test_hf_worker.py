"""``--hf_dataset`` end to end: the Hub replica, vfx-enqueue, Redis and a real worker process.

The worker fetches each video from the replica through huggingface_hub (``HF_ENDPOINT`` in its
environment), extracts, writes ``<output_dir>/<range>/<id>.npy`` and the labels beside it, and
removes what it fetched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import WorkerProcess, run_cli
from tests.helpers import ENQUEUE, RUN_SPEC_OPTIONS, files_under
from tests.hub_replica import (
    XD_MISSING,
    XD_REPO,
    XD_UNSAFE,
    XD_VIDEOS,
    HubReplica,
    cached_videos,
    hub_env,
    xd_relative_id,
)

pytestmark = pytest.mark.slow

BEAUTIFUL_MIND, BAD_BOYS, AMELIE = (xd_relative_id(path) for path, _ in XD_VIDEOS)
MISSING = xd_relative_id(XD_MISSING)
#: The replica's whole dataset, extracted as the queue tests' run.
DATASET_RUN = ("--hf_dataset", XD_REPO, *RUN_SPEC_OPTIONS)


def test_xd_violence_end_to_end_resumes_the_original_layout_and_fails_only_the_missing_video(
    xd_hub: tuple[HubReplica, str],
    tmp_path: Path,
    queue_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    hub, _ = xd_hub
    env = hub_env(hub, tmp_path, queue_env)
    out, progress = tmp_path / "features" / "i3d", tmp_path / "results" / "progress.txt"
    # Given a progress file the original tool wrote (one video done) and a worker fetching from the replica,
    progress.parent.mkdir(parents=True)
    progress.write_text(f"{BEAUTIFUL_MIND}\n", encoding="utf-8")
    worker = start_worker(**{k: v for k, v in env.items() if k.startswith("HF_")})
    # when the whole dataset is enqueued and waited for,
    args = [*DATASET_RUN, "--output_dir", str(out), "--check_progress", str(progress)]
    result = run_cli(ENQUEUE, *args, "--wait", env=env)
    # then the video in the progress file is skipped, the missing one fails with its reason, the rest is done,
    assert result.returncode == 1, result.stderr
    assert "Queued 3 of 4 videos" in result.stderr and "1 in --check_progress" in result.stderr
    assert "2 done, 1 failed of 3" in result.stderr
    assert f"FAILED {MISSING}: [download_failed]" in result.stderr and "(404)" in result.stderr
    assert f"Left out {len(XD_UNSAFE)} remote file(s) with unsafe names" in result.stderr
    # at <output_dir>/<range>/<id>.npy with the labels beside them, the manifest and the index,
    # and nothing else anywhere,
    assert files_under(out) == sorted(
        [f"{BAD_BOYS}.json", f"{BAD_BOYS}.npy", f"{AMELIE}.json", f"{AMELIE}.npy"]
        + ["index.csv", "vfx-run.json"]
    )
    assert files_under(tmp_path / "features") == [f"i3d/{name}" for name in files_under(out)]
    bad_boys, amelie = np.load(out / f"{BAD_BOYS}.npy"), np.load(out / f"{AMELIE}.npy")
    assert bad_boys.shape == (1, 1, 2048) and bad_boys.dtype == np.float32
    np.testing.assert_array_equal(bad_boys, amelie)  # both are copies of the same sample video
    labels = json.loads((out / f"{AMELIE}.json").read_text(encoding="utf-8"))
    assert labels["id"] == AMELIE.split("/")[1] and labels["split"] == "test"
    assert labels["binary_target"] == 1 and labels["frame_annotations"][0] == {"start": 10, "end": 52}
    # the progress file has the original's format, so the original tool resumes from it too,
    assert sorted(progress.read_text(encoding="utf-8").splitlines()) == sorted(
        [BEAUTIFUL_MIND, BAD_BOYS, AMELIE]
    )
    # and the worker kept none of the videos it fetched.
    assert cached_videos(tmp_path / "hf-home" / "hub") == []
    assert len(hub.requested("GET", "/resolve/")) >= 2
    assert "VideoDownloadError" in worker.log() and "Retry in" not in worker.log()  # not retried

    # Resume: only the failed video is left to do.
    again = run_cli(ENQUEUE, *args, "--dry-run", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [MISSING]
    assert "0 with valid output, 3 in --check_progress" in again.stderr
