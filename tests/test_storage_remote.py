"""RemoteFolder against a real S3-compatible server (moto): the methods LocalFolder has, URLs, errors."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tests.s3_replica import FaultyProxy
from vfx_tasks.errors import (
    ConfigurationError,
    ObjectNotFoundError,
    StorageAccessError,
    StorageUnavailableError,
    UnsafeFileError,
)
from vfx_tasks.settings import Settings
from vfx_tasks.storage import (
    RemoteFolder,
    fetch_object,
    header_from_size,
    normalize_url,
    npy_header,
    open_folder,
    open_folder_under,
    read_features,
    url_is_under,
    write_features,
    write_json,
)


def options(server: Any, **extra: Any) -> dict[str, Any]:
    return {"endpoint_url": server.endpoint_url, **extra}


def test_a_folder_in_a_bucket_reads_and_writes_what_a_local_one_does(s3_server: Any, s3_bucket: str) -> None:
    features = np.arange(2 * 5 * 2048, dtype=np.float32).reshape(2, 5, 2048)
    with open_folder(f"s3://{s3_bucket}/out/", storage_options=options(s3_server)) as folder:
        assert isinstance(folder, RemoteFolder) and str(folder.path) == f"s3://{s3_bucket}/out"
        write_features(folder, "a/b/v.npy", features)
        write_json(folder, "a/b/v.json", {"label": "x"})
        # Then the objects are where a local folder's files would be, and read back equal.
        assert s3_server.keys(s3_bucket) == ["out/a/b/v.json", "out/a/b/v.npy"]
        assert np.array_equal(read_features(folder, "a/b/v.npy"), features)
        assert npy_header(folder, "a/b/v.npy") == ((2, 5, 2048), np.dtype(np.float32))
        assert json.loads(folder.read_bytes("a/b/v.json", limit=100) or b"") == {"label": "x"}
        assert folder.read_bytes("missing.json", limit=100) is None and folder.lstat("missing.npy") is None
        listing = folder.listing()
        assert sorted(listing) == ["a/b/v.json", "a/b/v.npy"]
        assert header_from_size(listing["a/b/v.npy"].st_size, n_crops=5, feature_dim=2048) == (
            (2, 5, 2048), np.dtype(np.float32))
        assert [name for name, _ in folder.walk()] == ["a/b/v.json", "a/b/v.npy"]
        with pytest.raises(UnsafeFileError, match="more than the 10"):
            folder.read_bytes("a/b/v.json", limit=10)
        with pytest.raises(Exception, match="inside the output folder"):
            folder.read_bytes("../x", limit=10)


def test_the_manifest_is_created_only_where_none_is(s3_server: Any, s3_bucket: str) -> None:
    with open_folder(f"s3://{s3_bucket}/out", storage_options=options(s3_server)) as folder:
        assert folder.write_new("vfx-run.json", b"first", what="the manifest") is True
        # A second producer's conditional PUT (If-None-Match: *) loses, and the first one's stays.
        assert folder.write_new("vfx-run.json", b"second", what="the manifest") is False
    assert s3_server.read(s3_bucket, "out/vfx-run.json") == b"first"


def test_size_alone_tells_complete_features() -> None:
    for shape in [(1, 1, 2048), (7, 5, 2048), (123, 10, 768)]:
        out = io.BytesIO()
        np.save(out, np.zeros(shape, np.float32))
        size = len(out.getvalue())
        assert header_from_size(size, n_crops=shape[1], feature_dim=shape[2]) == (shape, np.dtype(np.float32))
        assert header_from_size(size - 4, n_crops=shape[1], feature_dim=shape[2]) is None
        assert header_from_size(size, n_crops=shape[1], feature_dim=shape[2], num_clips_per_video=99) is None


def test_urls_are_canonical_or_refused() -> None:
    assert normalize_url("S3://bucket/a/b/") == "s3://bucket/a/b"
    for bad in ["s3://", "s3://key:secret@bucket/x", "s3://b/a/../c", "s3://b//c", "s3://b/x?versionId=1"]:
        with pytest.raises(ConfigurationError):
            normalize_url(bad)
    assert url_is_under("s3://b/p/x.mp4", "s3://b/p") and not url_is_under("s3://b/pre/x.mp4", "s3://b/p")


def test_roots_mix_folders_and_url_prefixes(tmp_path: Path) -> None:
    settings = Settings.from_env({"VFX_OUTPUT_ROOTS": f"{tmp_path}:s3://bucket/features/,/srv"})
    assert settings.output_roots == (tmp_path, "s3://bucket/features", Path("/srv"))
    assert Settings.from_env(settings.to_environ()).output_roots == settings.output_roots
    with pytest.raises(ConfigurationError, match="without credentials"):
        Settings.from_env({"VFX_OUTPUT_ROOTS": "s3://token@bucket/x"})
    assert "secret" not in repr(Settings.from_env({"VFX_STORAGE_OPTIONS": '{"secret": "s3cr3t"}'}))


def test_a_worker_opens_only_urls_under_its_url_roots(s3_server: Any, s3_bucket: str) -> None:
    roots = [Path("/data"), f"s3://{s3_bucket}/features"]
    with open_folder_under(f"s3://{s3_bucket}/features/i3d", roots, storage_options=options(s3_server)):
        pass
    for other in [f"s3://{s3_bucket}/features-other/i3d", f"s3://{s3_bucket}x/features", "s3://else/features"]:
        with pytest.raises(UnsafeFileError, match="is not under"):
            open_folder_under(other, roots, storage_options=options(s3_server))


def test_storage_errors_say_what_to_do(s3_server: Any, s3_bucket: str, tmp_path: Path) -> None:
    # A bucket that does not exist: listing it is an access problem (exit 2), not an empty folder.
    with pytest.raises(StorageAccessError, match="bucket does not exist"):
        RemoteFolder.open("s3://no-such-bucket-here/x", storage_options=options(s3_server)).listing()
    # An object deleted after it was listed: not_found, never retried.
    with pytest.raises(ObjectNotFoundError, match="deleted or moved after it was listed") as caught:
        fetch_object(f"s3://{s3_bucket}/gone.mp4", tmp_path / "gone.mp4",
                     storage_options=options(s3_server), max_bytes=1 << 20)
    assert caught.value.code == "not_found" and not list(tmp_path.iterdir())
    s3_server.client().put_object(Bucket=s3_bucket, Key="big.mp4", Body=b"x" * 2048)
    with pytest.raises(UnsafeFileError, match="more than VFX_MAX_VIDEO_BYTES"):
        fetch_object(f"s3://{s3_bucket}/big.mp4", tmp_path / "big.mp4",
                     storage_options=options(s3_server), max_bytes=1024)
    # An endpoint that keeps answering 503 SlowDown: transient, once the client's retries are spent.
    with FaultyProxy(s3_server.port, fail_every=1) as proxy:
        quick = {"endpoint_url": proxy.endpoint_url,
                 "config_kwargs": {"retries": {"max_attempts": 1, "mode": "standard"}}}
        with pytest.raises(StorageUnavailableError, match="Workers retry such errors") as unavailable:
            RemoteFolder.open(f"s3://{s3_bucket}/x", storage_options=quick).read_bytes("a.json", limit=10)
    assert unavailable.value.code == "storage_unavailable" and proxy.failed >= 2, unavailable.value


def test_secrets_never_go_on_a_command_line(tmp_path: Path) -> None:
    from vfx_tasks.cli.status import main

    secret = '{"client_kwargs": {"aws_secret_access_key": "x"}}'
    result = CliRunner().invoke(main, ["--output_dir", str(tmp_path), "--storage-options", secret])
    assert result.exit_code == 2 and "would put a secret on the command line" in result.output
    assert "VFX_STORAGE_OPTIONS" in result.output
