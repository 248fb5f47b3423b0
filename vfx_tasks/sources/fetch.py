"""A task's video as a local file: Hub videos and objects are fetched for the task and removed after it.

Videos travel through the queue as locations, never as bytes. A local path is used as it is; an
``hf://datasets/...`` location or an object URL (``s3://bucket/key.mp4``) is downloaded by the
worker and, unless ``keep_downloads`` (Hub only), removed again when the task ends, so that a
worker's disk holds only the videos in flight and not the 85 GB of a whole dataset. A file that
was in the Hub cache before the task (kept earlier, or placed there by hand) is used from there
and left alone.

Each fetch that is to be removed goes into a folder of its own, under a folder per worker process
(``vfx-downloads/<host>-<pid>/`` beside the Hub cache), never into the shared Hub cache: there,
two workers fetching the same video share one blob, and the first to finish would delete the file
the other is still reading. A process folder left by a killed worker is removed by the next
process on the same host that fetches.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vfx_tasks.sources.hub import cached_file, download_file
from vfx_tasks.sources.hub_paths import is_hub_location, parse_location
from vfx_tasks.storage import fetch_object, is_url

logger = logging.getLogger(__name__)

#: Beside the Hub cache (same disk, same volume in compose), one sub-folder per worker process.
DOWNLOADS_FOLDER_NAME = "vfx-downloads"


@contextmanager
def fetched_video(
    location: str,
    *,
    keep_downloads: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    download_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    max_bytes: int = 0,
) -> Iterator[str]:
    """Yield a local path for ``location`` (a path, or an ``hf://datasets/`` location or an object
    URL fetched now; ``storage_options`` for the object store's client, objects larger than
    ``max_bytes`` refused, 0: no limit).

    ``cache_dir`` is the shared Hub cache (default: huggingface_hub's); ``download_dir`` holds the
    per-process folders (default: ``vfx-downloads`` beside the cache). What this call fetched is
    removed when the block ends, whether it succeeded or failed (a retry fetches again, resuming
    nothing but costing no disk in between); with ``keep_downloads`` it goes into the shared cache
    and stays.

    Raises:
        VideoDownloadError: the Hub file is gone, not accessible or truncated (not retried).
        HubUnavailableError: network trouble (retried by the queue).
        UnsafePathError: a malformed or unsafe location.
        ObjectNotFoundError: the object is gone (deleted after the listing; not retried).
        StorageAccessError: the object store refuses access (not retried).
        StorageUnavailableError: it cannot be reached or throttles (retried by the queue).
    """
    if is_url(location) and not is_hub_location(location):
        with _fetched_object(location, cache_dir, download_dir, storage_options, max_bytes) as path:
            yield path
        return
    if not is_hub_location(location):
        yield location
        return
    hub_file = parse_location(location)
    cached = cached_file(hub_file, cache_dir=cache_dir)
    if cached is not None or keep_downloads:
        path = cached or download_file(hub_file, cache_dir=cache_dir, endpoint=endpoint)
        logger.info("Fetched %s to %s%s", location, path, " (already cached)" if cached else "")
        yield path
        return
    private = Path(tempfile.mkdtemp(prefix="fetch-", dir=process_download_folder(cache_dir, download_dir)))
    try:
        path = download_file(hub_file, cache_dir=private, endpoint=endpoint)
        logger.info("Fetched %s to %s", location, path)
        yield path
    finally:
        shutil.rmtree(private, ignore_errors=True)


@contextmanager
def _fetched_object(
    url: str,
    cache_dir: str | os.PathLike[str] | None,
    download_dir: str | os.PathLike[str] | None,
    storage_options: Mapping[str, Any] | None,
    max_bytes: int,
) -> Iterator[str]:
    """The object at ``url`` in a folder of its own, removed when the block ends."""
    private = Path(tempfile.mkdtemp(prefix="fetch-", dir=process_download_folder(cache_dir, download_dir)))
    try:
        # The object's own name keeps its extension, which the decoders look at.
        name = url.rstrip("/").rsplit("/", 1)[-1] or "video"
        path = fetch_object(url, private / name, storage_options=storage_options,
                            max_bytes=max_bytes or sys.maxsize)
        logger.info("Fetched %s to %s", url, path)
        yield str(path)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def process_download_folder(
    cache_dir: str | os.PathLike[str] | None = None, download_dir: str | os.PathLike[str] | None = None
) -> Path:
    """This process's own download folder, ``<download_dir>/<host>-<pid>``, created on first use."""
    root = Path(download_dir) if download_dir is not None else _default_download_dir(cache_dir)
    host = socket.gethostname()
    folder = root / f"{host}-{os.getpid()}"
    if not folder.is_dir():
        _remove_folders_of_dead_processes(root, host)
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def _default_download_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is None:
        from huggingface_hub import constants

        cache_dir = constants.HF_HUB_CACHE
    return Path(cache_dir).expanduser().parent / DOWNLOADS_FOLDER_NAME


def _remove_folders_of_dead_processes(root: Path, host: str) -> None:
    # Only this host's folders: a pid means nothing on another machine sharing the volume.
    for folder in root.glob(f"{host}-*"):
        folder_host, _, pid = folder.name.rpartition("-")
        if folder_host == host and pid.isdigit() and not _is_running(int(pid)):
            logger.info("Removing %s, left by a worker process that is gone", folder)
            shutil.rmtree(folder, ignore_errors=True)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
