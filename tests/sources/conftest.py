"""The XD-Violence replica the Hub tests list, fetch from and extract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hub_replica import XD_MISSING, XD_REPO, XD_UNSAFE, HubReplica, build_xd_violence


@pytest.fixture
def xd_hub(tmp_path: Path, sample_videos_dir: Path) -> Iterator[tuple[HubReplica, str]]:
    """A Hub replica serving the XD-Violence-shaped repository (``main`` only: no Parquet export),
    and main's commit. Its listing also names a missing video and files with unsafe names."""
    root = build_xd_violence(tmp_path / "replica-main", sample_videos_dir)
    with HubReplica() as hub:
        yield hub, hub.add_revision(XD_REPO, "main", root, phantom_files=[XD_MISSING, *XD_UNSAFE])
