"""ObjectStoreSource and fetching objects, against a real S3-compatible server (moto)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from vfx_tasks.errors import DependencyError
from vfx_tasks.sources.fetch import fetched_video
from vfx_tasks.sources.objects import ObjectStoreSource
from vfx_tasks.storage import RemoteFolder


def test_a_prefix_lists_like_a_folder(s3_server: Any, s3_bucket: str) -> None:
    client = s3_server.client()
    for key in ["in/top.mp4", "in/a/b/deep.MKV", "in/a/notes.txt", "in/.hidden/x.mp4", "in/a/.x.mp4",
                "in/dup.mp4", "in/dup.avi", "in/bad\\name.mp4", "in/odd?.mp4", "other/y.mp4"]:
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"v")
    options = {"endpoint_url": s3_server.endpoint_url}
    source = ObjectStoreSource(f"s3://{s3_bucket}/in/", storage_options=options)
    items = list(source.iter_videos())
    # Videos below the prefix only, hidden ones left out, the key without its extension as the id,
    assert [(item.relative_id, item.path) for item in items] == [
        ("a/b/deep", f"s3://{s3_bucket}/in/a/b/deep.MKV"),
        ("dup", f"s3://{s3_bucket}/in/dup.avi"),
        ("top", f"s3://{s3_bucket}/in/top.mp4"),
    ]
    # and keys that cannot be safe output paths (or canonical URLs) left out with the reason.
    assert sorted(path.rsplit("/", 1)[-1] for path, _ in source.rejected) == ["bad\\name.mp4", "odd?.mp4"]


def test_a_fetched_object_is_a_local_file_until_the_task_ends(
    s3_server: Any, s3_bucket: str, tmp_path: Path, sample_videos_dir: Path
) -> None:
    url = s3_server.upload(s3_bucket, "v/clip.mp4", sample_videos_dir / "carphone_pristine.mp4")
    options = {"endpoint_url": s3_server.endpoint_url}
    downloads = tmp_path / "downloads"
    with fetched_video(url, storage_options=options, download_dir=downloads, max_bytes=10 << 20) as path:
        assert Path(path).name == "clip.mp4"
        assert Path(path).read_bytes() == (sample_videos_dir / "carphone_pristine.mp4").read_bytes()
    assert not Path(path).exists() and not any(Path(path).parent.parent.iterdir())


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed here")
def test_a_missing_client_package_says_which_extra_installs_it() -> None:
    with pytest.raises(DependencyError, match=r"pip install 'vfx_tasks\[gcs\]'"):
        RemoteFolder.open("gs://bucket/features")
