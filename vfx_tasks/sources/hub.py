"""Talking to the Hugging Face Hub: listing, downloads, what its errors mean to us, cache clean-up.

The one module that calls huggingface_hub (imported inside the functions, so that the CLI stays
light). ``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_CACHE``/``HF_HOME`` and
``HF_HUB_OFFLINE`` itself when it is first imported; nothing here reads the environment. Every
call takes an optional ``endpoint`` (and ``cache_dir`` where it writes) so that tests can point one
process at a replica.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from vfx_tasks.errors import ConfigurationError, HubUnavailableError, VfxError, VideoDownloadError

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from vfx_tasks.sources.hub_paths import HubFile

logger = logging.getLogger(__name__)
T = TypeVar("T")

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: Branch where the Hub keeps its Parquet export of a dataset.
PARQUET_REVISION = "refs/convert/parquet"


def is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (as huggingface_hub read it) forbids network calls."""
    from huggingface_hub import constants

    check = getattr(constants, "is_offline_mode", None)
    return bool(check()) if callable(check) else bool(constants.HF_HUB_OFFLINE)


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if huggingface_hub accepts it as a repository id, else a :class:`ConfigurationError`."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ConfigurationError(
            f"Invalid Hugging Face dataset ({repo_id!r}): {e} Give it as owner/name, e.g. jherng/xd-violence."
        ) from e
    return repo_id


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
    if isinstance(error, hf_errors.OfflineModeIsEnabled) or (
        isinstance(error, hf_errors.LocalEntryNotFoundError) and is_offline()
    ):
        return _offline_error(what=what, listing=listing)
    if isinstance(error, hf_errors.HfHubHTTPError):
        return _translate_http_error(error, what=what, permanent=permanent)
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
    # huggingface_hub reports a short download as a bare OSError: its message is all there is to match.
    if isinstance(error, OSError) and "Consistency check failed" in str(error):
        return permanent(f"{what}: the download was truncated ({error}).")
    if isinstance(error, OSError):
        return HubUnavailableError(f"{what}: {name}: {error}; will retry (network or local disk trouble).")
    if isinstance(error, _transport_errors()):
        return HubUnavailableError(f"{what}: network error ({name}: {error}); will retry.")
    return permanent(f"{what}: {name}: {error}")


def _offline_error(*, what: str, listing: bool) -> VfxError:
    if listing:
        return ConfigurationError(
            f"{what}: HF_HUB_OFFLINE is set, so the Hub cannot be asked what the dataset holds. Unset "
            "HF_HUB_OFFLINE to enqueue (workers may stay offline if their Hub cache holds the videos)."
        )
    return VideoDownloadError(
        f"{what}: HF_HUB_OFFLINE is set and the video is not in the local Hub cache. Unset "
        "HF_HUB_OFFLINE, or fill the cache first (`hf download --repo-type dataset ...`)."
    )


def _translate_http_error(error: BaseException, *, what: str, permanent: type[VfxError]) -> VfxError:
    from huggingface_hub import errors as hf_errors

    status = _status(error)
    if isinstance(error, hf_errors.GatedRepoError) or status in (401, 403):
        return permanent(
            f"{what}: access denied ({type(error).__name__}). Accept the dataset's terms and set HF_TOKEN."
        )
    if isinstance(error, hf_errors.RepositoryNotFoundError):
        return permanent(
            f"{what}: the repository does not exist or is private. Check the name; set HF_TOKEN."
        )
    if isinstance(error, hf_errors.RevisionNotFoundError):
        return permanent(f"{what}: no such revision. Check --revision (a branch, tag or commit).")
    if isinstance(error, hf_errors.RemoteEntryNotFoundError):
        return permanent(f"{what}: not found on the Hub (404). The file was removed or renamed upstream.")
    if status is None or status in _RETRY_STATUS:
        return HubUnavailableError(f"{what}: the Hub answered {status or 'nothing'}; will retry.")
    return permanent(f"{what}: the Hub answered HTTP {status} ({error}).")


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


@functools.cache
def _transport_errors() -> tuple[type[Exception], ...]:
    """Network error base classes of the HTTP client huggingface_hub talks through.

    huggingface_hub 2.x uses httpx2 and 1.x httpx (0.x used requests, whose errors are OSErrors).
    """
    return tuple(
        importlib.import_module(client).TransportError
        for client in ("httpx2", "httpx")
        if importlib.util.find_spec(client) is not None
    )


def _api(endpoint: str | None) -> HfApi:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint)


def _listing(what: str, call: Callable[[], T]) -> T:
    """``call()``, its errors translated as listing errors (permanent ones are configuration errors)."""
    try:
        return call()
    except Exception as e:  # translated: every kind is mapped to permanent or transient
        raise translate_hub_error(e, what=what, listing=True) from e


def dataset_commit(repo_id: str, *, revision: str, endpoint: str | None = None) -> str:
    """The commit that ``revision`` (a branch, tag or commit) of dataset ``repo_id`` names now.

    Raises:
        ConfigurationError: no such repository or revision, no access, offline, or no commit named.
        HubUnavailableError: network trouble or a busy Hub; worth retrying.
    """
    what = f"Dataset {repo_id} at revision {revision!r}"
    info = _listing(what, lambda: _api(endpoint).dataset_info(repo_id, revision=revision))
    if not info.sha:
        raise ConfigurationError(f"The Hub did not say which commit {revision!r} of {repo_id} is.")
    return str(info.sha)


def list_dataset_files(
    repo_id: str, *, revision: str, folder: str | None = None, endpoint: str | None = None
) -> list[str]:
    """Sorted paths of the files (folders left out) under ``folder``, or in the whole repository.

    Raises:
        ConfigurationError: see :func:`dataset_commit`.
        HubUnavailableError: network trouble or a busy Hub; worth retrying.
    """
    from huggingface_hub.hf_api import RepoFile

    tree = _api(endpoint).list_repo_tree
    entries = _listing(
        f"Listing {folder or 'the files'} of {repo_id}@{revision}",
        # list() inside: the listing is fetched page by page while it is iterated.
        lambda: list(
            tree(repo_id, path_in_repo=folder, recursive=True, revision=revision, repo_type="dataset")
        ),
    )
    return sorted(entry.path for entry in entries if isinstance(entry, RepoFile))


def parquet_export_files(
    repo_id: str, *, config: str, endpoint: str | None = None
) -> tuple[str, list[str]] | None:
    """The commit of the Hub's Parquet export of ``config`` and its file paths, or ``None`` if none is served.

    The export lives on branch ``refs/convert/parquet`` as ``<config>/<split>/<n>.parquet``.

    Raises:
        ConfigurationError: see :func:`dataset_commit`.
        HubUnavailableError: network trouble or a busy Hub; worth retrying.
    """
    from huggingface_hub import errors as hf_errors
    from huggingface_hub.hf_api import RepoFile

    api = _api(endpoint)
    try:
        export = api.dataset_info(repo_id, revision=PARQUET_REVISION)
        entries = list(
            api.list_repo_tree(
                repo_id, path_in_repo=config, recursive=True, revision=export.sha, repo_type="dataset"
            )
        )
    except (hf_errors.RevisionNotFoundError, hf_errors.RemoteEntryNotFoundError):
        return None  # no export branch, or nothing exported for this config
    except Exception as e:  # translated: every other kind is mapped to permanent or transient
        raise translate_hub_error(e, what=f"Parquet export of {repo_id}", listing=True) from e
    return str(export.sha), sorted(entry.path for entry in entries if isinstance(entry, RepoFile))


def cached_file(hub_file: HubFile, *, cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """Local path of ``hub_file`` if the Hub cache already holds it, else ``None``."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
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
    listing: bool = False,
) -> str:
    """Fetch ``hub_file`` into the Hub cache (a cached copy is reused) and return its local path.

    huggingface_hub resumes an interrupted transfer with HTTP ranges and checks the size. With
    ``listing`` (a file that describes the dataset, read at enqueue), permanent failures are
    :class:`ConfigurationError` instead.

    Raises:
        VideoDownloadError: the file is gone (404), not accessible, or arrived truncated.
        HubUnavailableError: network trouble or a busy Hub; worth retrying.
    """
    from huggingface_hub import hf_hub_download

    try:
        return str(
            hf_hub_download(
                hub_file.repo_id,
                hub_file.path_in_repo,
                repo_type="dataset",
                revision=hub_file.revision,
                cache_dir=cache_dir,
                endpoint=endpoint,
            )
        )
    except Exception as e:  # translated: every kind is mapped to permanent or transient
        raise translate_hub_error(e, what=f"Fetching {hub_file.to_location()}", listing=listing) from e


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
