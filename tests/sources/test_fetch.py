"""Fetching Hub videos for tasks: each fetch in its own folder, so workers never delete each other's files."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.hub_replica import XD_REPO, XD_VIDEOS, HubReplica, cached_videos
from vfx_tasks.sources.fetch import fetched_video
from vfx_tasks.sources.hub_paths import HubFile

VIDEO = XD_VIDEOS[0][0]


@pytest.fixture
def location(xd_hub: tuple[HubReplica, str]) -> tuple[HubReplica, str]:
    """The replica and the ``hf://`` location of one of its videos."""
    hub, commit = xd_hub
    return hub, HubFile(XD_REPO, commit, VIDEO).to_location()


def test_a_worker_finishing_does_not_delete_the_video_another_is_reading(
    location: tuple[HubReplica, str], tmp_path: Path
) -> None:
    hub, hf_location = location
    cache, downloads = tmp_path / "hf" / "hub", tmp_path / "hf" / "vfx-downloads"
    # Given two workers sharing one Hub cache that fetch the same video, one after the other,
    first = fetched_video(hf_location, cache_dir=cache, endpoint=hub.url)
    second = fetched_video(hf_location, cache_dir=cache, endpoint=hub.url)
    first_path, second_path = Path(first.__enter__()), Path(second.__enter__())
    expected = first_path.read_bytes()
    # when the first one finishes its task before the second,
    first.__exit__(None, None, None)
    # then the second still reads its whole video, and once it finishes nothing is left on disk.
    assert second_path.is_file() and second_path.read_bytes() == expected
    second.__exit__(None, None, None)
    assert first_path != second_path and first_path.is_relative_to(downloads)
    assert cached_videos(cache) == [] and cached_videos(downloads) == []
    assert [p.name for p in downloads.iterdir()] == [f"{socket.gethostname()}-{os.getpid()}"]


def test_folders_of_dead_worker_processes_are_removed(
    location: tuple[HubReplica, str], tmp_path: Path
) -> None:
    hub, hf_location = location
    downloads = tmp_path / "hf" / "vfx-downloads"
    # Given the folder of a worker process that was killed mid-download on this host, and one of another host,
    exited = subprocess.Popen(["true"])
    exited.wait()  # reaped: its pid names no process now
    dead_pid = exited.pid
    dead = downloads / f"{socket.gethostname()}-{dead_pid}" / "fetch-x"
    other_host = downloads / f"{socket.gethostname()}x-{dead_pid}"
    dead.mkdir(parents=True)
    (dead / "partial.mp4").write_bytes(b"partial")
    other_host.mkdir()
    # when another process fetches, the dead one's folder goes and the other host's stays.
    with fetched_video(hf_location, cache_dir=tmp_path / "hf" / "hub", endpoint=hub.url):
        pass
    assert not dead.parent.exists() and other_host.is_dir()
