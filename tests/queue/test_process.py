"""The work of one task without Celery around it (``queue/worker/process.py``): real Redis, real files.

Several tests need the task to stop right after the checks under test, before any extraction:
their output folder's manifest is another run's, which :func:`process_video` refuses as its
last check before it fetches the video (a :class:`ManifestMismatchError`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from tests.conftest import run_spec, write_test_video
from tests.helpers import files_under
from vfx_tasks.errors import ManifestMismatchError, UntrustedMessageError, WorkerDiedError
from vfx_tasks.outputs.index import read_index
from vfx_tasks.outputs.manifest import manifest_for, write_manifest
from vfx_tasks.queue.job import Job, Run
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.worker.models import get_extractor, release_models
from vfx_tasks.queue.worker.process import forget_ledgers, process_video, skip_if_done
from vfx_tasks.settings import Settings
from vfx_tasks.storage import TEMP_PREFIX, LocalFolder, find_temp_files, output_path, write_features_atomic

WORKER = "me@box"
I3D_DIM = 2048


@pytest.fixture
def settings(redis_url: str, pretrained_dir: Path, tmp_path: Path) -> Iterator[Settings]:
    """A CPU worker's settings: videos under ``in/``, features under ``out/``, this test's Redis."""
    yield Settings.from_env(
        {}, broker_url=redis_url, pretrained_dir=pretrained_dir, device="cpu",
        input_roots=(tmp_path / "in",), output_roots=(tmp_path / "out",),
    )  # fmt: skip
    # The process keeps its ledgers and models between tasks; the next test has another Redis.
    forget_ledgers()
    release_models()


def video_job(tmp_path: Path, relative_id: str = "v", **labels: object) -> Job:
    """A job of the run the queue tests extract, for ``in/<relative_id>.mp4`` (not written here)."""
    return Job.create(
        run_spec(tmp_path / "out"),
        relative_id=relative_id,
        video_path=str(tmp_path / "in" / f"{relative_id}.mp4"),
        labels=labels or None,
    )


def registered(job: Job, settings: Settings) -> Ledger:
    """The ledger with the job's run registered, as the producer leaves it."""
    ledger = Ledger.from_url(settings.broker_url)
    ledger.register_run(job.run)
    return ledger


def claim_folder_for_another_run(job: Job) -> None:
    """Give the job's output folder the manifest of another run (5 crops instead of 1)."""
    other = job.recipe.with_changes(crop_type="5-crop")
    write_manifest(job.output_dir, manifest_for(other, pretrained_dir=None))


# -- skip_if_done --------------------------------------------------------------------------------


def test_a_repeat_of_a_video_done_with_a_valid_output_is_acknowledged_and_its_claim_dropped(
    tmp_path: Path, settings: Settings
) -> None:
    job = video_job(tmp_path)
    ledger = registered(job, settings)
    output = output_path(job.output_dir, "v")
    write_features_atomic(output, np.ones((1, 1, I3D_DIM), np.float32))
    ledger.mark_done(job.run_id, "v", {"shape": [1, 1, I3D_DIM]})
    before = output.stat()
    # Given a video done with a valid output, and a fresh claim of it (a producer that planned
    # before the video ended),
    assert ledger.claim(job.run, ["v"]) == [True]
    # when its message comes again, it is acknowledged with a summary saying so,
    with LocalFolder.open_under(job.output_dir, settings.output_roots) as folder:
        summary = skip_if_done(job, ledger, folder)
    assert summary == {"relative_id": "v", "output": str(output), "skipped": "already done"}
    # its claim is dropped (or the video would count as queued forever), the output is untouched.
    assert ledger.entries(job.run_id, "pending") == {}
    counts = ledger.counts(job.run_id)
    assert (counts.queued, counts.running, counts.done, counts.failed) == (0, 0, 1, 0)
    after = output.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize("case", ["not done", "file gone", "truncated", "other shape"])
def test_a_video_is_computed_again_unless_done_with_a_valid_output(
    case: str, tmp_path: Path, settings: Settings
) -> None:
    job = video_job(tmp_path)
    ledger = registered(job, settings)
    output = output_path(job.output_dir, "v")
    write_features_atomic(output, np.ones((1, 5 if case == "other shape" else 1, I3D_DIM), np.float32))
    if case == "file gone":
        output.unlink()
    elif case == "truncated":
        output.write_bytes(output.read_bytes()[:-4])
    if case != "not done":
        ledger.mark_done(job.run_id, "v", {"shape": [1, 1, I3D_DIM]})
    ledger.claim(job.run, ["v"])
    # Given no done entry, or one whose file is gone or not the run's features,
    # then the message is not skipped, and its claim stays.
    with LocalFolder.open_under(job.output_dir, settings.output_roots) as folder:
        assert skip_if_done(job, ledger, folder) is None
    assert set(ledger.entries(job.run_id, "pending")) == {"v"}


# -- process_video -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"output_dir": "elsewhere"}, "is not under VFX_OUTPUT_ROOTS"),
        ({"video_path": "/etc/passwd"}, "is not under VFX_INPUT_ROOTS"),
        ({"relative_id": "a//v"}, "has an empty"),
    ],
    ids=["output outside the roots", "video outside the roots", "malformed id"],
)
def test_an_untrusted_message_is_refused_before_anything_is_written_or_recorded(
    change: dict[str, str], reason: str, tmp_path: Path, settings: Settings
) -> None:
    video = write_test_video(tmp_path / "in" / "v.mp4", width=96, height=64, num_frames=16)
    output_dir = tmp_path / change.get("output_dir", "out")
    job = Job.create(
        Run.create(output_dir, video_job(tmp_path).recipe),
        relative_id=change.get("relative_id", "v"),
        video_path=change.get("video_path", str(video)),
    )
    # Given a message naming a path outside the roots or a malformed id, for a video done with a
    # valid output and claimed again (a message let through would drop that claim, or count an attempt),
    ledger = registered(job, settings)
    write_features_atomic(output_path(job.output_dir, job.relative_id), np.ones((1, 1, I3D_DIM), np.float32))
    ledger.mark_done(job.run_id, job.relative_id, {"shape": [1, 1, I3D_DIM]})
    ledger.claim(job.run, [job.relative_id])
    client = redis.Redis.from_url(settings.broker_url)
    files, records = files_under(tmp_path), {key: client.dump(key) for key in client.keys()}
    # when its task runs, it is refused with the reason,
    with pytest.raises(UntrustedMessageError, match=reason):
        process_video(job, settings=settings, worker_name=WORKER)
    # and nothing was written anywhere, nothing changed in Redis.
    assert files_under(tmp_path) == files
    assert {key: client.dump(key) for key in client.keys()} == records


@pytest.mark.parametrize(("max_redeliveries", "refused"), [(1, WorkerDiedError), (2, ManifestMismatchError)])
def test_a_video_that_killed_its_workers_more_than_max_redeliveries_times_is_given_up(
    max_redeliveries: int, refused: type[Exception], tmp_path: Path, settings: Settings
) -> None:
    job = video_job(tmp_path)
    ledger = registered(job, settings)
    claim_folder_for_another_run(job)
    # Given a video whose two earlier attempts died with their workers,
    for _ in range(2):
        ledger.mark_started(job.run_id, "v", "dead@box")
    # when it is delivered again, it is given up once the deaths exceed max_redeliveries (and
    # goes on to the next check, the folder's manifest, while they do not).
    with pytest.raises(refused) as raised:
        process_video(job, settings=settings.with_overrides(max_redeliveries=max_redeliveries),
                      worker_name=WORKER)  # fmt: skip
    if refused is WorkerDiedError:
        assert "died 2 times on this video" in str(raised.value)
        assert "VFX_MAX_REDELIVERIES=1" in str(raised.value)
    assert list(Path(job.output_dir).rglob("*.npy")) == []


def test_a_stale_redelivery_of_a_failed_video_is_acknowledged_without_work(
    tmp_path: Path, settings: Settings
) -> None:
    job = video_job(tmp_path)
    ledger = registered(job, settings)
    claim_folder_for_another_run(job)
    reason = {"code": "timeout", "message": "ran past the hard time limit"}
    ledger.mark_failed(job.run_id, "v", reason)
    # Given a video recorded as failed and not queued again since (a task ended by the hard time
    # limit is redelivered, unacknowledged), its message is acknowledged without work,
    summary = process_video(job, settings=settings, worker_name=WORKER)
    assert summary == {"relative_id": "v", "skipped": "already failed"}
    # without counting an attempt or touching its failure.
    assert ledger.entries(job.run_id, "deliveries") == {}
    assert ledger.entries(job.run_id, "failed") == {"v": reason}
    # Queued again by a rerun, the same message is a request again: it goes on to the next check.
    ledger.claim(job.run, ["v"])
    with pytest.raises(ManifestMismatchError):
        process_video(job, settings=settings, worker_name=WORKER)


@pytest.mark.parametrize("deaths", [0, 1])
def test_the_temporary_files_of_an_attempt_that_died_are_removed(
    deaths: int, tmp_path: Path, settings: Settings
) -> None:
    job = video_job(tmp_path)
    ledger = registered(job, settings)
    claim_folder_for_another_run(job)
    out = Path(job.output_dir)
    ours = [out / f"{TEMP_PREFIX}v.a1b2.npy.part", out / f"{TEMP_PREFIX}v.c3d4.json.part"]
    theirs = out / f"{TEMP_PREFIX}other.e5f6.npy.part"
    for leftover in [*ours, theirs]:
        leftover.write_bytes(b"half written")
    # Given temporary files of this video and of another one, and `deaths` earlier attempts on
    # this video that died with their workers,
    for _ in range(deaths):
        ledger.mark_started(job.run_id, "v", "dead@box")
    with pytest.raises(ManifestMismatchError):
        process_video(job, settings=settings, worker_name=WORKER)
    # then a redelivery removes this video's (their writer is dead), and a first attempt none:
    # another worker may be writing them (a message handed out twice).
    expected = [theirs] if deaths else sorted([*ours, theirs])
    assert find_temp_files(out) == expected


def test_a_video_is_extracted_written_indexed_and_recorded_as_done(
    tmp_path: Path, settings: Settings
) -> None:
    job = video_job(tmp_path, split="test", binary_target=1)
    write_test_video(Path(job.video_path), width=96, height=64, num_frames=40)
    ledger = registered(job, settings)
    write_manifest(job.output_dir, manifest_for(job.recipe, pretrained_dir=settings.pretrained_dir))
    ledger.claim(job.run, ["v"])
    # Given a queued video of 40 frames with labels (I3D, center crop, one clip; stand-in weights),
    # when its task runs,
    summary = process_video(job, settings=settings, worker_name=WORKER)
    out = Path(job.output_dir)
    # then its features are written, those of the video,
    features = np.load(out / "v.npy")
    expected = get_extractor(job.recipe, settings=settings).extract(
        job.video_path, crop_type="center", num_clips_per_video=1
    )
    assert features.shape == (1, 1, I3D_DIM) and features.dtype == np.float32
    assert np.linalg.norm(features - expected.features) <= 1e-5 * np.linalg.norm(expected.features)
    # with its labels beside them, its row in the index, and no temporary file left,
    assert json.loads((out / "v.json").read_text(encoding="utf-8")) == {"split": "test", "binary_target": 1}
    row = read_index(out)["v"]
    assert (row.frames, row.clips, row.shape) == (40, 1, (1, 1, I3D_DIM))
    assert row.labels == {"split": "test", "binary_target": 1}
    assert find_temp_files(out) == []
    # and the ledger records it done with the summary the task returns, nothing else left.
    assert summary == {
        "relative_id": "v", "output": str(out / "v.npy"), "shape": [1, 1, I3D_DIM], "num_frames": 40,
        "fps": 25.0, "seconds": summary["seconds"], "worker": WORKER,
    }  # fmt: skip
    assert ledger.entries(job.run_id, "done") == {"v": summary}
    for state in ("pending", "running", "deliveries", "failed"):
        assert ledger.entries(job.run_id, state) == {}, state
