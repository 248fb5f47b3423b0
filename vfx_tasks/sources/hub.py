"""Talking to the Hugging Face Hub: the lazy import, what its errors mean to us, downloads, cache clean-up.

``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_CACHE``/``HF_HOME`` and
``HF_HUB_OFFLINE`` itself when it is first imported; nothing here reads the environment. Every
call takes an optional ``endpoint``/``cache_dir`` so that tests can point one process at a replica.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType

from vfx_tasks.errors import (
    ConfigurationError,
    DependencyError,
    HubUnavailableError,
    VfxError,
    VideoDownloadError,
)
from vfx_tasks.sources.hub_paths import HubFile

logger = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def import_huggingface_hub() -> ModuleType:
    """``huggingface_hub``, or a :class:`DependencyError` saying how to install it."""
    try:
        import huggingface_hub
    except ImportError as e:
        raise DependencyError(
            "huggingface_hub is required for --hf_dataset: `pip install 'huggingface_hub>=0.23'`."
        ) from e
    return huggingface_hub


def is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (as huggingface_hub read it) forbids network calls."""
    import_huggingface_hub()
    from huggingface_hub import constants
    check = getattr(constants, "is_offline_mode", None)
    return bool(check()) if callable(check) else bool(constants.HF_HUB_OFFLINE)


def translate_hub_error(error: BaseException, *, what: str, listing: bool = False) -> VfxError:
    """Our error for a huggingface_hub (or HTTP client) exception raised while handling ``what``.

    Listing (at enqueue): a missing repository, revision or access is a :class:`ConfigurationError`.
    Fetching (in a worker): a missing file, no access, or a download shorter than announced is a
    :class:`VideoDownloadError` for that video. Network trouble, 5xx and 429 are :class:`HubUnavailableError`,
    which the queue retries.
    """
    from huggingface_hub import errors as hf_errors

    name = type(error).__name__
    permanent: type[VfxError] = ConfigurationError if listing else VideoDownloadError
    if name == "OfflineModeIsEnabled" or (
        isinstance(error, hf_errors.LocalEntryNotFoundError) and is_offline()
    ):
        if listing:
            return permanent(
                f"{what}: HF_HUB_OFFLINE is set, so the Hub cannot be asked what the dataset holds. Unset "
                "HF_HUB_OFFLINE to enqueue (workers may stay offline if their Hub cache holds the videos)."
            )
        return permanent(
            f"{what}: HF_HUB_OFFLINE is set and the video is not in the local Hub cache. Unset "
            "HF_HUB_OFFLINE, or fill the cache first (`hf download --repo-type dataset ...`)."
        )
    if isinstance(error, hf_errors.GatedRepoError) or (
        isinstance(error, hf_errors.HfHubHTTPError) and _status(error) in (401, 403)
    ):
        return permanent(f"{what}: access denied ({name}). Accept the dataset's terms and set HF_TOKEN.")
    if isinstance(error, hf_errors.RepositoryNotFoundError):
        return permanent(
            f"{what}: the repository does not exist or is private. Check the name; set HF_TOKEN."
        )
    if isinstance(error, hf_errors.RevisionNotFoundError):
        return permanent(f"{what}: no such revision. Check --revision (a branch, tag or commit).")
    if isinstance(error, hf_errors.RemoteEntryNotFoundError):
        return permanent(f"{what}: not found on the Hub (404). The file was removed or renamed upstream.")
    if isinstance(error, hf_errors.HfHubHTTPError):
        status = _status(error)
        if status is None or status in _RETRY_STATUS:
            return HubUnavailableError(f"{what}: the Hub answered {status or 'nothing'}; will retry.")
        return permanent(f"{what}: the Hub answered HTTP {status} ({error}).")
    if isinstance(error, hf_errors.LocalEntryNotFoundError):
        # hf_hub_download wraps what made its HEAD call fail (a 403, a server that is no Hub, a
        # refused connection) when nothing is cached: judge by that cause when there is one.
        if isinstance(error.__cause__, (hf_errors.HfHubHTTPError, hf_errors.FileMetadataError)):
            return translate_hub_error(error.__cause__, what=what, listing=listing)
        return HubUnavailableError(
            f"{what}: the Hub cannot be reached ({error}); will retry. Check HF_ENDPOINT."
        )
    if isinstance(error, hf_errors.FileMetadataError):
        return permanent(f"{what}: {error}")
    if isinstance(error, OSError) and "Consistency check failed" in str(error):
        return permanent(f"{what}: the download was truncated ({error}).")
    if isinstance(error, OSError):
        return HubUnavailableError(f"{what}: {name}: {error}; will retry (network or local disk trouble).")
    if name.endswith(
        (
            "ConnectError",
            "TimeoutException",
            "ReadTimeout",
            "ConnectTimeout",
            "RemoteProtocolError",
            "ReadError",
            "NetworkError",
            "TransportError",
            "ConnectionError",
        )
    ) or _is_transport(error):
        return HubUnavailableError(f"{what}: network error ({name}: {error}); will retry.")
    return permanent(f"{what}: {name}: {error}")


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _is_transport(error: BaseException) -> bool:
    # httpx (huggingface_hub 1.x) or httpx2 (2.x): both name their network errors TransportError.
    return any(cls.__name__ == "TransportError" for cls in type(error).__mro__)


def cached_file(hub_file: HubFile, *, cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """Local path of ``hub_file`` if the Hub cache already holds it, else ``None``."""
    hf = import_huggingface_hub()
    found = hf.try_to_load_from_cache(
        hub_file.repo_id,
        hub_file.path_in_repo,
        cache_dir=cache_dir,
        revision=hub_file.revision,
        repo_type="dataset",
    )
    return found if isinstance(found, str) else None


def download_file(
    hub_file: HubFile,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
) -> str:
    """Fetch ``hub_file`` into the Hub cache (a cached copy is reused) and return its local path.

    huggingface_hub resumes an interrupted transfer with HTTP ranges and checks the size.

    Raises:
        VideoDownloadError: the file is gone (404), not accessible, or arrived truncated.
        HubUnavailableError: network trouble or a busy Hub; worth retrying.
    """
    hf = import_huggingface_hub()
    try:
        return str(
            hf.hf_hub_download(
                hub_file.repo_id,
                hub_file.path_in_repo,
                repo_type="dataset",
                revision=hub_file.revision,
                cache_dir=cache_dir,
                endpoint=endpoint,
            )
        )
    except Exception as e:  # noqa: BLE001 (translated: every kind is mapped to permanent or transient)
        raise translate_hub_error(e, what=f"Fetching {hub_file.to_location()}") from e


def remove_cached_file(path: str | os.PathLike[str]) -> None:
    """Delete a file fetched by :func:`download_file`: its snapshot link and the blob it points to.

    Empty snapshot folders left behind are removed too. Never raises: clean-up failures are logged.
    """
    pointer = Path(path)
    try:
        blob = pointer.resolve() if pointer.is_symlink() else None
        pointer.unlink(missing_ok=True)
        if blob is not None:
            blob.unlink(missing_ok=True)
        folder = pointer.parent
        while folder.name and folder.parent.name != "snapshots":
            folder.rmdir()  # raises once the folder still holds something
            folder = folder.parent
    except OSError as e:
        if pointer.exists():
            logger.warning("Could not remove the fetched video %s: %s", pointer, e)
