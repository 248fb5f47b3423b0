"""Fetching the official checkpoints into the pretrained directory, safely and resumably.

A file is written to ``<name>.part`` first, continued with an HTTP ``Range`` request when a
previous transfer broke off, checked against the sha256 prefix that OpenMMLab puts at the end of
its file names, and only then renamed to its final name with :func:`os.replace`. So a file under
the final name is always complete and verified; a ``.part`` file is always safe to delete.
"""

from __future__ import annotations

import http.client
import logging
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vfx_tasks.errors import CheckpointDownloadError, ChecksumMismatchError
from vfx_tasks.models.files import file_sha256
from vfx_tasks.models.spec import ModelSpec

logger = logging.getLogger(__name__)

#: Called with ``(bytes_done, bytes_total)`` as a transfer advances; ``bytes_total`` is ``None``
#: when the server does not say how large the file is.
ProgressCallback = Callable[[int, "int | None"], None]

PART_SUFFIX = ".part"
DEFAULT_TIMEOUT_SECONDS = 60.0
#: Attempts per file when the connection drops mid-transfer; each one resumes where the last stopped.
DEFAULT_MAX_ATTEMPTS = 5
_CHUNK_BYTES = 1 << 20
_USER_AGENT = "vfx_tasks-download-models"


@dataclass(frozen=True)
class DownloadResult:
    """What :func:`download_checkpoint` did for one model.

    Attributes:
        model: Full model name.
        path: Final path of the verified checkpoint.
        status: ``"present"`` (already there and valid, nothing fetched) or ``"downloaded"``.
        bytes_fetched: Bytes received over the network by this call.
        resumed_from_bytes: Size of the ``.part`` file the first request continued from (0 if none).
    """

    model: str
    path: Path
    status: Literal["present", "downloaded"]
    bytes_fetched: int = 0
    resumed_from_bytes: int = 0


def checkpoint_url(spec: ModelSpec, *, base_url: str | None = None) -> str:
    """The URL to fetch ``spec``'s checkpoint from: the official one, or ``<base_url>/<file name>``."""
    if base_url:
        return f"{base_url.rstrip('/')}/{spec.checkpoint_filename}"
    return spec.checkpoint_url


def expected_sha256(spec: ModelSpec) -> str | None:
    """What a checkpoint's sha256 must be or start with: the whole hash a run pinned (a user's
    own weights), else the prefix in its official name, else ``None`` (nothing to check)."""
    return spec.checkpoint_sha256 or spec.checkpoint_sha256_prefix


def is_valid_checkpoint_file(path: Path, spec: ModelSpec) -> bool:
    """Whether ``path`` exists and its sha256 is (or starts with) :func:`expected_sha256`.

    A name without a hash prefix and no pinned hash cannot be checked, so an existing file counts
    as valid.
    """
    if not path.is_file():
        return False
    expected = expected_sha256(spec)
    return expected is None or file_sha256(path).startswith(expected)


def download_checkpoint(
    spec: ModelSpec,
    pretrained_dir: Path,
    *,
    base_url: str | None = None,
    progress: ProgressCallback | None = None,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> DownloadResult:
    """Make sure ``pretrained_dir`` holds ``spec``'s verified checkpoint, fetching it if needed.

    Raises:
        CheckpointDownloadError: the server cannot be reached, answers with an HTTP error, or the
            connection broke ``max_attempts`` times. The ``.part`` file is kept for the next run.
        ChecksumMismatchError: the fetched file is not the one its name promises; it is deleted.
    """
    pretrained_dir = Path(pretrained_dir)
    final_path = pretrained_dir / spec.checkpoint_filename
    if final_path.is_file():
        if is_valid_checkpoint_file(final_path, spec):
            logger.info("%s is present and valid; skipping", final_path)
            return DownloadResult(model=spec.name, path=final_path, status="present")
        logger.warning("%s does not match its sha256 prefix; fetching it again", final_path)
        final_path.unlink()

    pretrained_dir.mkdir(parents=True, exist_ok=True)
    part_path = final_path.with_name(final_path.name + PART_SUFFIX)
    url = checkpoint_url(spec, base_url=base_url)
    resumed_from = part_path.stat().st_size if part_path.is_file() else 0
    fetched = 0
    for attempt in range(1, max_attempts + 1):
        received, complete = _fetch_into(url, part_path, progress=progress, timeout_seconds=timeout_seconds)
        fetched += received
        if complete:
            break
        if received == 0 or attempt == max_attempts:
            # No progress: retrying at once would only fail the same way.
            raise CheckpointDownloadError(
                f"Download of {url} broke off after {part_path.stat().st_size} bytes "
                f"({attempt} attempt(s)). Run the command again to resume from {part_path}."
            )
        logger.warning("Transfer of %s broke off; resuming (attempt %d of %d)", url, attempt + 1,
                       max_attempts)
        time.sleep(min(0.5 * attempt, 5.0))

    _verify_part(part_path, spec, url=url)
    os.replace(part_path, final_path)
    logger.info("Saved %s", final_path)
    return DownloadResult(
        model=spec.name, path=final_path, status="downloaded", bytes_fetched=fetched,
        resumed_from_bytes=resumed_from,
    )


def _fetch_into(
    url: str, part_path: Path, *, progress: ProgressCallback | None, timeout_seconds: float
) -> tuple[int, bool]:
    """Append the rest of ``url`` to ``part_path``. Returns ``(bytes received, whether complete)``.

    Raises :class:`CheckpointDownloadError` when no transfer can start at all.
    """
    offset = part_path.stat().st_size if part_path.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_seconds)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # The range starts at or past the end: the .part file is already complete (or is
            # longer than the file, which the hash check will catch).
            e.close()
            return 0, True
        raise CheckpointDownloadError(f"Server answered HTTP {e.code} ({e.reason}) for {url}.") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise CheckpointDownloadError(f"Cannot reach {url} ({reason}).") from e

    received = 0
    with response:
        if offset and response.status != 206:
            logger.info("Server ignored the Range request for %s; starting over", url)
            offset = 0
        total = _total_bytes(response, offset)
        mode = "ab" if offset else "wb"
        try:
            with open(part_path, mode) as part:
                if progress:
                    progress(offset, total)
                while chunk := response.read(_CHUNK_BYTES):
                    part.write(chunk)
                    received += len(chunk)
                    if progress:
                        progress(offset + received, total)
                part.flush()
                os.fsync(part.fileno())
        except (TimeoutError, ConnectionError, ssl.SSLError, http.client.HTTPException) as e:
            logger.warning("Connection to %s broke after %d bytes: %s", url, offset + received, e)
            return received, False
        except OSError as e:
            raise CheckpointDownloadError(
                f"Cannot write {part_path} ({e}). Free some space or choose another --pretrained-dir."
            ) from e
    # http.client returns a short body without raising when the server closes early, so the
    # length is checked here.
    complete = total is None or offset + received >= total
    return received, complete


def _total_bytes(response: http.client.HTTPResponse, offset: int) -> int | None:
    """Full size of the file from ``Content-Range`` (206) or ``Content-Length`` (200)."""
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None else None


def _verify_part(part_path: Path, spec: ModelSpec, *, url: str) -> None:
    """Delete ``part_path`` and raise :class:`ChecksumMismatchError` if its hash is not the promised one."""
    expected = expected_sha256(spec)
    if expected is None:
        logger.warning("%s carries no sha256 prefix in its name; saved unverified", spec.checkpoint_filename)
        return
    actual = file_sha256(part_path)
    if not actual.startswith(expected):
        size = part_path.stat().st_size
        part_path.unlink()
        promised = "the run pinned" if spec.checkpoint_sha256 else "its name promises a hash starting with"
        raise ChecksumMismatchError(
            f"Downloaded {url} ({size} bytes) has sha256 {actual[:16]}..., but {promised} "
            f"{expected}. The file was deleted. Run the command again; if it fails the "
            "same way, the server (or a proxy in between) serves a wrong file: fetch it from another "
            "network or mirror (--base-url)."
        )
