"""Hugging Face sources against a Hub replica on 127.0.0.1: listing, labels, path safety, fetching.

Everything goes through the real huggingface_hub (and datasets, for the Parquet export) code paths;
only the server is ours (``tests/hub_replica.py``). No test reaches the internet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROCESS_TIMEOUT_SECONDS, REPO_DIR, run_cli
from tests.helpers import ENQUEUE
from tests.hub_replica import (
    XD_MISSING,
    XD_REPO,
    XD_UNSAFE,
    XD_VIDEOS,
    HubReplica,
    build_xd_parquet_export,
    cached_videos,
    hub_env,
    xd_relative_id,
)
from vfx_tasks.errors import ConfigurationError, HubUnavailableError, UnsafePathError, VideoDownloadError
from vfx_tasks.sources.fetch import fetched_video
from vfx_tasks.sources.hub import translate_hub_error
from vfx_tasks.sources.hub_dataset import HubDatasetSource, parse_frame_annotations, xd_violence_labels
from vfx_tasks.sources.hub_paths import HubFile, parse_location, parse_resolve_url, safe_relative_id
from vfx_tasks.storage import output_path

AMELIE = XD_VIDEOS[2][0]


def source(hub: HubReplica, tmp_path: Path, repo_id: str = XD_REPO, **options: object) -> HubDatasetSource:
    return HubDatasetSource(repo_id, endpoint=hub.url, cache_dir=tmp_path / "hub-cache", **options)  # type: ignore[arg-type]


# -- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "data/video/1-1004/A.Beautiful.Mind.2001__#00-01-45_00-02-50_label_A.mp4",
        "vidéos/été 2024/clip #1 (final).mp4",
        "refs/convert/parquet-like/名前.mkv",
    ],
)
def test_locations_round_trip_names_with_hash_spaces_and_unicode(path: str) -> None:
    hub_file = HubFile("owner/name", "refs/pr/1", path)
    assert parse_location(hub_file.to_location()) == hub_file


@pytest.mark.parametrize(
    "path",
    [
        "../escape.mp4",
        "a/../../escape.mp4",
        "/etc/passwd.mp4",
        "C:/video.mp4",
        "a\\..\\b.mp4",
        "a//b.mp4",
        "a/./b.mp4",
        "a/%2e%2e/%2e%2e/b.mp4",
        "a/%2E%2E%2F%2E%2E%2Fb.mp4",
        "a/%252e%252e/b.mp4",
        "a/b\x00.mp4",
        "",
        " padded.mp4",
    ],
)
def test_unsafe_remote_paths_are_refused(path: str) -> None:
    with pytest.raises(UnsafePathError, match="Refusing remote path"):
        safe_relative_id(path)


def test_safe_relative_ids_keep_their_names_and_stay_inside_the_output(tmp_path: Path) -> None:
    relative_id = safe_relative_id(
        "data/video/test_videos/Amélie #1 v2.0__#00-10_label_A.mp4", strip_prefix="data/video/"
    )
    assert relative_id == "test_videos/Amélie #1 v2.0__#00-10_label_A"
    assert (
        output_path(tmp_path, relative_id) == tmp_path / "test_videos" / "Amélie #1 v2.0__#00-10_label_A.npy"
    )


def test_hub_urls_parse_into_files_of_any_endpoint() -> None:
    url = (
        "https://huggingface.co/datasets/jherng/xd-violence/resolve/main/data/video/1-1004/"
        "A.Beautiful.Mind.2001__%2300-01-45_00-02-50_label_A.mp4"
    )
    assert parse_resolve_url(url) == HubFile(
        XD_REPO, "main", "data/video/1-1004/A.Beautiful.Mind.2001__#00-01-45_00-02-50_label_A.mp4"
    )
    assert parse_resolve_url("https://example.org/video.mp4") is None
    with pytest.raises(UnsafePathError):
        parse_resolve_url("https://huggingface.co/datasets/a/b/resolve/main/data/%2e%2e/%2e%2e/x.mp4")


def test_xd_violence_labels_follow_the_old_loading_script() -> None:
    assert xd_violence_labels("A.Beautiful.Mind.2001__#00-01-45_00-02-50_label_A")["binary_target"] == 0
    labels = xd_violence_labels("Bad.Boys.1995__#01-11-55_01-12-40_label_B2-G-0")
    assert labels == {"binary_target": 1, "multilabel_targets": [2, 6], "label_codes": ["B2", "G"]}
    annotations = parse_frame_annotations("Some Name #1_label_B1-0-0.mp4 10 52 80 101\nodd 1 2 3\n")
    assert annotations == {"Some Name #1_label_B1-0-0": [{"start": 10, "end": 52}, {"start": 80, "end": 101}]}


# -- listing ------------------------------------------------------------------------------------


def test_xd_violence_files_are_listed_by_split_with_labels_pinned_to_a_commit(
    xd_hub: tuple[HubReplica, str],
    tmp_path: Path,
) -> None:
    hub, commit = xd_hub
    # Given the repository without a Parquet export, when every split is listed,
    everything = source(hub, tmp_path)
    items = list(everything.iter_videos())
    # then each video file is there as <range>/<id>, pinned to the commit main pointed at,
    assert everything.listed_with == "file-listing"
    expected = sorted(xd_relative_id(p) for p in [*(p for p, _ in XD_VIDEOS), XD_MISSING])
    assert [item.relative_id for item in items] == expected
    assert all(item.path.startswith(f"hf://datasets/{XD_REPO}@{commit}/data/video/") for item in items)
    # the unsafe names are left out and reported,
    assert sorted(path for path, _ in everything.rejected) == sorted(XD_UNSAFE)
    # the listing was read page by page,
    assert len(hub.requested("GET", "/tree/")) > 1
    # and labels come from the file names and the test annotations.
    amelie = next(item for item in items if item.relative_id == xd_relative_id(AMELIE))
    assert amelie.labels is not None
    assert amelie.labels["split"] == "test" and amelie.labels["multilabel_targets"] == [1]
    assert amelie.labels["frame_annotations"] == [{"start": 10, "end": 52}, {"start": 80, "end": 101}]

    test = [item.relative_id for item in source(hub, tmp_path, split="test").iter_videos()]
    train = [item.relative_id for item in source(hub, tmp_path, split="train").iter_videos()]
    assert test == [xd_relative_id(AMELIE)]
    assert sorted(train + test) == expected


def test_xd_violence_parquet_export_is_read_with_datasets_when_served(
    xd_hub: tuple[HubReplica, str],
    tmp_path: Path,
) -> None:
    hub, commit = xd_hub
    # Given the Hub also serves a Parquet export whose rows carry huggingface.co URLs,
    hub.add_revision(XD_REPO, "refs/convert/parquet", build_xd_parquet_export(tmp_path / "replica-parquet"))
    listed = source(hub, tmp_path)
    items = list(listed.iter_videos())
    # then the rows are used, with the same ids and locations (pinned to main's commit) as the files.
    assert listed.listed_with == "parquet-export"
    from_files = list(source(hub, tmp_path, use_parquet_export=False).iter_videos())
    assert [(i.relative_id, i.path) for i in items] == [(i.relative_id, i.path) for i in from_files]
    assert all(f"@{commit}/" in item.path for item in items)
    bad_boys = next(item for item in items if "Bad.Boys" in item.relative_id)
    assert bad_boys.labels is not None and bad_boys.labels["multilabel_targets"] == [2, 6]
    assert [i.relative_id for i in source(hub, tmp_path, split="test").iter_videos()] == [
        xd_relative_id(AMELIE)
    ]


def test_any_repository_lists_its_videos_or_a_pattern(tmp_path: Path, sample_videos_dir: Path) -> None:
    root = tmp_path / "clips-repo"
    for name in ["clips/a.mp4", "clips/sub/b #2.webm", "train/c.mp4", "test/d.mp4", "notes.txt", "raw/e.bin"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    with HubReplica() as hub:
        hub.add_revision("someone/clips", "main", root)
        all_videos = [i.relative_id for i in source(hub, tmp_path, "someone/clips").iter_videos()]
        assert all_videos == ["clips/a", "clips/sub/b #2", "test/d", "train/c"]
        pattern = [
            i.relative_id for i in source(hub, tmp_path, "someone/clips", pattern="clips/**").iter_videos()
        ]
        assert pattern == ["clips/a", "clips/sub/b #2"]
        binary = [
            i.relative_id for i in source(hub, tmp_path, "someone/clips", pattern="raw/*.bin").iter_videos()
        ]
        assert binary == ["raw/e"]
        assert [
            i.relative_id for i in source(hub, tmp_path, "someone/clips", split="test").iter_videos()
        ] == ["test/d"]


def test_revisions_and_repositories_that_do_not_exist_say_so(
    xd_hub: tuple[HubReplica, str],
    tmp_path: Path,
) -> None:
    hub, commit = xd_hub
    with pytest.raises(ConfigurationError, match="no such revision"):
        source(hub, tmp_path, revision="v9").resolve_commit()
    with pytest.raises(ConfigurationError, match="does not exist or is private"):
        source(hub, tmp_path, "nobody/nothing").resolve_commit()
    assert source(hub, tmp_path, revision=commit).resolve_commit() == commit


def test_hf_token_is_sent(
    xd_hub: tuple[HubReplica, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub, _ = xd_hub
    monkeypatch.setenv("HF_TOKEN", "hf_replica_token")
    source(hub, tmp_path).resolve_commit()
    assert hub.requests[-1].headers.get("authorization") == "Bearer hf_replica_token"


# -- fetching -----------------------------------------------------------------------------------


def test_fetched_videos_are_removed_after_use_unless_kept(
    xd_hub: tuple[HubReplica, str],
    tmp_path: Path,
    sample_videos_dir: Path,
) -> None:
    hub, commit = xd_hub
    cache = tmp_path / "cache"
    location = HubFile(XD_REPO, commit, AMELIE).to_location()
    # A connection dropped mid-transfer is absorbed by huggingface_hub's own resume.
    hub.drop_once.add(AMELIE)
    with fetched_video(location, cache_dir=cache, endpoint=hub.url) as path:
        assert Path(path).read_bytes() == (sample_videos_dir / "carphone_pristine.mp4").read_bytes()
        assert Path(path).name == Path(AMELIE).name
    assert len(hub.requested("GET", AMELIE)) == 2
    assert cached_videos(cache) == []
    with fetched_video(location, keep_downloads=True, cache_dir=cache, endpoint=hub.url) as path:
        pass
    assert cached_videos(cache) == [Path(path).resolve()]
    # What was in the cache before is left alone.
    with fetched_video(location, cache_dir=cache, endpoint=hub.url):
        pass
    assert len(cached_videos(cache)) == 1


def test_missing_and_truncated_files_are_permanent_failures(
    xd_hub: tuple[HubReplica, str],
    tmp_path: Path,
) -> None:
    hub, commit = xd_hub
    cache = tmp_path / "cache"
    with (
        pytest.raises(VideoDownloadError, match=r"not found on the Hub \(404\)"),
        fetched_video(
            HubFile(XD_REPO, commit, XD_MISSING).to_location(),
            cache_dir=cache,
            endpoint=hub.url,
        ),
    ):
        pass
    hub.truncated.add(XD_VIDEOS[0][0])
    with (
        pytest.raises(VideoDownloadError, match="truncated") as caught,
        fetched_video(
            HubFile(XD_REPO, commit, XD_VIDEOS[0][0]).to_location(),
            cache_dir=cache,
            endpoint=hub.url,
        ),
    ):
        pass
    assert caught.value.code == "download_failed"
    hub.forbidden.add(XD_VIDEOS[1][0])
    forbidden = HubFile(XD_REPO, commit, XD_VIDEOS[1][0]).to_location()
    with (
        pytest.raises(VideoDownloadError, match="access denied"),
        fetched_video(forbidden, cache_dir=cache, endpoint=hub.url),
    ):
        pass
    assert cached_videos(cache) == []


def test_network_errors_are_transient() -> None:
    import httpx2

    error = translate_hub_error(httpx2.ConnectError("connection refused"), what="Fetching x")
    assert isinstance(error, HubUnavailableError) and "will retry" in error.message
    truncated = translate_hub_error(OSError("Consistency check failed: file should be of size 9"), what="x")
    assert isinstance(truncated, VideoDownloadError)

    from huggingface_hub import errors as hf_errors

    def http_error(status: int) -> Exception:
        response = httpx2.Response(status, request=httpx2.Request("HEAD", "http://127.0.0.1/x"))
        return hf_errors.HfHubHTTPError(f"{status} error", response=response)

    # hf_hub_download wraps a failed HEAD call when nothing is cached; its cause decides.
    for status, kind in [(503, HubUnavailableError), (429, HubUnavailableError), (403, VideoDownloadError)]:
        wrapped = hf_errors.LocalEntryNotFoundError("cannot find the requested files")
        wrapped.__cause__ = http_error(status)
        assert isinstance(translate_hub_error(wrapped, what="x"), kind), status


# -- the command --------------------------------------------------------------------------------


def test_enqueue_dry_run_lists_the_split(
    xd_hub: tuple[HubReplica, str],
    tmp_path: Path,
    queue_env: dict[str, str],
) -> None:
    hub, commit = xd_hub
    env = hub_env(hub, tmp_path, queue_env)
    args = ["--hf_dataset", XD_REPO, "--split", "test", "--output_dir", str(tmp_path / "out"), "--dry-run"]
    result = run_cli(ENQUEUE, *args, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [xd_relative_id(AMELIE)]
    assert f"through file-listing (commit {commit})" in result.stderr
    assert "Would queue 1 of 1" in result.stderr
    # The listing was anchored on the replica, not on huggingface.co.
    assert hub.requested("GET", "/api/datasets/jherng/xd-violence/revision/main")
    assert os.environ.get("HF_ENDPOINT") != hub.url  # this process was left alone


def test_rows_with_a_video_column_are_read_with_datasets(
    tmp_path: Path,
    queue_env: dict[str, str],
) -> None:
    # Given a script-free dataset (a CSV) whose rows name videos by repo path or by Hub URL,
    root = tmp_path / "table-repo"
    for name in ["videos/a #1.mp4", "videos/sub/b é.mp4"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (root / "data").mkdir()
    (root / "data" / "train.csv").write_text(
        "video,label\n"
        "videos/a #1.mp4,3\n"
        "https://huggingface.co/datasets/someone/table/resolve/main/videos/sub/b%20%C3%A9.mp4,4\n"
        "../../etc/passwd.mp4,5\n",
        encoding="utf-8",
    )
    script = (
        "import json\n"
        "from vfx_tasks.sources.hub_dataset import HubDatasetSource\n"
        "source = HubDatasetSource('someone/table', video_column='video')\n"
        "for item in source.iter_videos():\n"
        "    print(json.dumps([item.relative_id, item.path, dict(item.labels)]))\n"
        "print(json.dumps([source.listed_with, len(source.rejected), source.resolve_commit()]))\n"
    )
    with HubReplica() as hub:
        commit = hub.add_revision("someone/table", "main", root)
        env = {**hub_env(hub, tmp_path, queue_env), "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache")}
        # when it is listed through `datasets` in a process whose HF_ENDPOINT is the replica,
        result = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT_SECONDS,
        )
    assert result.returncode == 0, result.stderr
    *rows, summary = [json.loads(line) for line in result.stdout.splitlines()]
    # then every safe row is a video pinned to the listed commit, with the other columns as labels.
    assert summary == ["datasets", 1, commit]
    assert rows == [
        [
            "videos/a #1",
            f"hf://datasets/someone/table@{commit}/videos/a #1.mp4",
            {"label": 3, "split": "train"},
        ],
        [
            "videos/sub/b é",
            f"hf://datasets/someone/table@{commit}/videos/sub/b é.mp4",
            {"label": 4, "split": "train"},
        ],
    ]


def test_offline_mode_is_honoured_with_a_hint(
    xd_hub: tuple[HubReplica, str], tmp_path: Path, queue_env: dict[str, str]
) -> None:
    hub, _ = xd_hub
    env = {**hub_env(hub, tmp_path, queue_env), "HF_HUB_OFFLINE": "1"}
    args = ["--hf_dataset", XD_REPO, "--output_dir", str(tmp_path / "out"), "--dry-run"]
    result = run_cli(ENQUEUE, *args, env=env)
    assert result.returncode == 2, result.stderr
    assert "HF_HUB_OFFLINE is set" in result.stderr and "Unset HF_HUB_OFFLINE" in result.stderr
    assert hub.requests == []


def test_offline_workers_use_their_cache_and_fail_the_rest(
    xd_hub: tuple[HubReplica, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    hub, commit = xd_hub
    cache = tmp_path / "cache"
    kept = HubFile(XD_REPO, commit, AMELIE).to_location()
    with fetched_video(kept, keep_downloads=True, cache_dir=cache, endpoint=hub.url):
        pass
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    asked = len(hub.requests)
    with fetched_video(kept, cache_dir=cache, endpoint=hub.url) as path:
        assert Path(path).is_file()
    other = HubFile(XD_REPO, commit, XD_VIDEOS[0][0]).to_location()
    with (
        pytest.raises(VideoDownloadError, match="HF_HUB_OFFLINE is set"),
        fetched_video(other, cache_dir=cache, endpoint=hub.url),
    ):
        pass
    assert len(hub.requests) == asked
