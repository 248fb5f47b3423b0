"""A task's video as a local file: Hub videos are fetched for the task and removed after it.

Videos travel through the queue as locations, never as bytes. A local path is used as it is; an
``hf://datasets/...`` location is downloaded by the worker into the Hub cache and, unless
``keep_downloads``, removed again when the task ends, so that a worker's disk holds only the
videos in flight and not the 85 GB of a whole dataset. A file that was in the cache before the
task (kept earlier, or placed there by hand) is left alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from vfx_tasks.sources.hub import cached_file, download_file, remove_cached_file
from vfx_tasks.sources.hub_paths import is_hub_location, parse_location

logger = logging.getLogger(__name__)


@contextmanager
def fetched_video(
    location: str,
    *,
    keep_downloads: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
) -> Iterator[str]:
    """Yield a local path for ``location`` (a path, or an ``hf://datasets/`` location fetched now).

    What this call fetched is removed when the block ends, whether it succeeded or failed
    (a retry fetches again, resuming nothing but costing no disk in between).

    Raises:
        VideoDownloadError: the Hub file is gone, not accessible or truncated (not retried).
        HubUnavailableError: network trouble (retried by the queue).
        UnsafePathError: a malformed or unsafe location.
    """
    if not is_hub_location(location):
        yield location
        return
    hub_file = parse_location(location)
    was_cached = cached_file(hub_file, cache_dir=cache_dir) is not None
    path = download_file(hub_file, cache_dir=cache_dir, endpoint=endpoint)
    logger.info("Fetched %s to %s%s", location, path, " (already cached)" if was_cached else "")
    try:
        yield path
    finally:
        if not keep_downloads and not was_cached:
            remove_cached_file(path)

