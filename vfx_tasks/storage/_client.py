"""The object-storage client, through fsspec: the file system of a URL, and its errors sorted into ours.

The one module that imports fsspec and reads its back ends' errors (s3fs's ``OSError`` kinds,
botocore's credential errors). :func:`storage_error` sorts them once: no credentials, refused
ones, no permission or no bucket are :class:`~vfx_tasks.errors.StorageAccessError` (permanent); a
missing object :class:`~vfx_tasks.errors.ObjectNotFoundError`; throttling, 5xx and the network
:class:`~vfx_tasks.errors.StorageUnavailableError` (transient: the queue retries). The client's
own retries (botocore's, s3fs's) come first.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from vfx_tasks.errors import (
    ConfigurationError,
    DependencyError,
    ObjectNotFoundError,
    StorageAccessError,
    StorageUnavailableError,
    VfxError,
)
from vfx_tasks.storage.urls import protocol_of

#: The package each common protocol needs, for the message when it is missing.
_PACKAGES = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
#: A missing object is ``not_found`` where a file was expected, an access problem where a
#: bucket or prefix was (a listing that finds no bucket).
Missing = Literal["not_found", "access"]


@dataclass(frozen=True)
class ObjectInfo:
    """What :meth:`RemoteFolder.lstat` says of an object: the fields of ``os.stat_result`` callers read."""

    st_size: int
    st_mtime_ns: int
    st_mode: int = stat.S_IFREG | 0o644


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The fsspec file system for ``url``'s protocol (one per process and options: fsspec caches them).

    Listings are not cached: another process may add or delete objects at any time.

    Raises:
        DependencyError: the protocol's package (s3fs, gcsfs) is not installed.
        ConfigurationError: an unknown protocol, or options it does not take.
    """
    protocol = protocol_of(url)
    try:
        import fsspec

        cls = fsspec.get_filesystem_class(protocol)
    except ImportError as e:
        extra = _PACKAGES.get(protocol)
        fix = f"pip install 'vfx_tasks[{extra}]'" if extra else "install the fsspec back end for it"
        raise DependencyError(f"{protocol}:// needs a package that is not installed ({e}); {fix}.") from e
    except ValueError as e:
        raise ConfigurationError(f"Unknown storage protocol {protocol}:// ({e}). Use s3://, gs://...") from e
    options = {"use_listings_cache": False, **(storage_options or {})}
    try:
        return cls(**options)
    except TypeError as e:
        raise ConfigurationError(
            f"Storage options {sorted(options)} do not fit {protocol}:// ({e}); fix --storage-options "
            "or VFX_STORAGE_OPTIONS."
        ) from e


def storage_error(error: BaseException, url: str, doing: str, *, missing: Missing = "not_found") -> VfxError:
    """The error of our tree for ``error`` met while ``doing`` at ``url``."""
    if isinstance(error, VfxError):
        return error
    detail = f"{type(error).__name__}: {error}"
    if isinstance(error, PermissionError) or _is_credentials_error(error):
        return StorageAccessError(
            f"Access denied while {doing} {url} ({detail}). Check the credentials this machine uses "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS, "
            "VFX_STORAGE_OPTIONS) and that they may read and write there."
        )
    if isinstance(error, FileNotFoundError):
        if missing == "access":
            return StorageAccessError(
                f"Cannot list {url}: the bucket does not exist or these credentials cannot see it "
                f"({detail}). Check the URL, the endpoint (VFX_STORAGE_OPTIONS) and the credentials."
            )
        return ObjectNotFoundError(
            f"{url} is gone ({detail}): deleted or moved after it was listed. Put it back and run the "
            "same vfx-enqueue again, or leave it out."
        )
    if isinstance(error, ValueError):
        return ConfigurationError(f"Invalid location {url} ({detail}). Check the bucket and path.")
    if isinstance(error, TypeError):  # the client refused an option when it first connected
        return ConfigurationError(
            f"The storage options do not fit the client of {url} ({detail}); fix --storage-options or "
            "VFX_STORAGE_OPTIONS."
        )
    return StorageUnavailableError(
        f"Object storage failed while {doing} {url} ({detail}): throttled, unreachable or failing for "
        "now. Workers retry such errors; run a command again. If it persists, check the endpoint "
        "(VFX_STORAGE_OPTIONS) and the network."
    )


def _is_credentials_error(error: BaseException) -> bool:
    try:
        from botocore.exceptions import NoCredentialsError, PartialCredentialsError
    except ImportError:
        return False
    return isinstance(error, (NoCredentialsError, PartialCredentialsError))


@contextmanager
def storage_errors(url: str, doing: str, *, missing: Missing = "not_found") -> Iterator[None]:
    """Within the block, any error of the storage client is raised as :func:`storage_error`'s."""
    try:
        yield
    except VfxError:
        raise
    except Exception as e:  # fsspec back ends raise OSError, their client's own errors, ValueError...
        raise storage_error(e, url, doing, missing=missing) from e


def mtime_ns(info: Mapping[str, Any]) -> int:
    """An object's modification time from a listing entry (S3 ``LastModified``, GCS ``updated``)."""
    for key in ("LastModified", "last_modified", "updated", "mtime", "modified"):
        value = info.get(key)
        if isinstance(value, datetime):
            return int(value.timestamp() * 1e9)
        if isinstance(value, (int, float)):
            return int(value * 1e9)
        if isinstance(value, str):
            try:
                return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1e9)
            except ValueError:
                continue
    return 0
