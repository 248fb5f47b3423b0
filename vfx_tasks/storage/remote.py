"""A folder in object storage (``s3://``, ``gs://``, any fsspec URL): the same methods as LocalFolder.

An object store has no links, no partial objects and no appends, so what
:class:`~vfx_tasks.storage.local.LocalFolder` guards against with descriptors is here a matter of
names: every name is checked to stay below the folder's URL, and a write is one PUT, which no
reader sees half done. What a folder cannot do (append to ``index.csv``, rename, give HDF5 a file)
it says with :attr:`RemoteFolder.can_append` or a clear error; callers keep the index rows in the
ledger instead (see ``outputs/index.py``).

The client and its errors are :mod:`vfx_tasks.storage._client`'s.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from vfx_tasks.errors import ConfigurationError, OutputError, StorageUnavailableError, UnsafeFileError
from vfx_tasks.storage._client import ObjectInfo, filesystem, mtime_ns, storage_errors
from vfx_tasks.storage.urls import UrlPath, join_url, normalize_url, url_is_under

logger = logging.getLogger(__name__)


def _split(name: str) -> str:
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or any(p in (".", "..") for p in parts) or "//" in name:
        raise OutputError(f"Invalid file name ({name!r}): it must stay inside the output folder.")
    return "/".join(parts)


class RemoteFolder:
    """A folder in object storage: the objects whose keys start with its URL and ``/``.

    A prefix needs no making and cannot be a link, so opening one checks nothing but its name.
    """

    #: Objects cannot be appended to: the index is written whole (see ``outputs/index.py``).
    can_append = False
    #: A PUT sets the object's time; an export compares times with ``>=`` instead of ``==``.
    keeps_mtime = False

    def __init__(self, fs: Any, url: str) -> None:
        self._fs = fs
        self.url = url
        #: The folder's URL, joined with ``/`` for messages.
        self.path = UrlPath(url)
        self._root = fs._strip_protocol(url).rstrip("/")

    @classmethod
    def open(
        cls, url: str, *, storage_options: Mapping[str, Any] | None = None, create: bool = False
    ) -> RemoteFolder:
        """The folder at ``url`` (``create`` changes nothing: prefixes exist once objects do)."""
        url = normalize_url(url, what="folder URL")
        return cls(filesystem(url, storage_options), url)

    @classmethod
    def open_under(
        cls,
        url: str,
        roots: Sequence[str | os.PathLike[str]],
        *,
        storage_options: Mapping[str, Any] | None = None,
        create: bool = True,
    ) -> RemoteFolder:
        """The folder at ``url`` once it is one of ``roots`` (URL prefixes) or below one.

        Raises:
            UnsafeFileError: under none of them.
        """
        url = normalize_url(url, what="folder URL")
        url_roots = [str(root) for root in roots if isinstance(root, str) and "://" in root]
        if not any(url_is_under(url, root) for root in url_roots):
            raise UnsafeFileError(f"{url} is not under any of {', '.join(url_roots) or 'no URL roots'}.")
        return cls.open(url, storage_options=storage_options, create=create)

    def close(self) -> None:
        """Nothing to close: the client is shared by the process."""

    def __enter__(self) -> RemoteFolder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteFolder({self.url!r})"

    def _key(self, name: str) -> str:
        return f"{self._root}/{_split(name)}"

    def url_of(self, name: str) -> str:
        """The URL of ``name`` below the folder."""
        return join_url(self.url, _split(name))

    # -- reading ---------------------------------------------------------------------------------

    @contextmanager
    def open_regular(self, name: str, *, limit: int) -> Iterator[BinaryIO | None]:
        """The object ``name`` open for reading (ranged GETs), or ``None`` when it is missing.

        Raises:
            UnsafeFileError: larger than ``limit`` bytes.
            StorageAccessError, StorageUnavailableError: as :func:`~vfx_tasks.storage._client.storage_error`.
        """
        with storage_errors(self.url_of(name), "reading"):
            try:
                f = self._fs.open(self._key(name), "rb", block_size=1 << 16)
            except FileNotFoundError:
                f = None
        if f is None:
            yield None
            return
        with f:
            if f.size > limit:
                raise self._too_big(name, f.size, limit)
            with storage_errors(self.url_of(name), "reading"):
                yield f

    def _too_big(self, name: str, size: int, limit: int) -> UnsafeFileError:
        return UnsafeFileError(
            f"{self.url_of(name)} holds {size} bytes, more than the {limit} any file of its kind may; "
            "it is not read. Move it away (or rebuild it) and run again."
        )

    def read_bytes(self, name: str, *, limit: int) -> bytes | None:
        """The bytes of ``name`` (one ranged GET), or ``None`` when it is missing."""
        with storage_errors(self.url_of(name), "reading"):
            try:
                data = self._fs.cat_file(self._key(name), start=0, end=limit + 1)
            except FileNotFoundError:
                return None
        if len(data) > limit:
            raise self._too_big(name, len(data), limit)
        return bytes(data)

    def lstat(self, name: str) -> ObjectInfo | None:
        """Size and time of the object ``name``, or ``None`` when it is missing."""
        with storage_errors(self.url_of(name), "reading"):
            try:
                info = self._fs.info(self._key(name))
            except FileNotFoundError:
                return None
        if info.get("type") != "file":
            return None
        return ObjectInfo(int(info.get("size") or 0), mtime_ns(info))

    def listing(self) -> dict[str, ObjectInfo]:
        """Every object below, by name, from one paged listing (1,000 keys a request on S3).

        Raises:
            StorageAccessError: the bucket does not exist or cannot be listed.
            StorageUnavailableError: as :func:`~vfx_tasks.storage._client.storage_error`.
        """
        with storage_errors(self.url, "listing", missing="access"):
            found = self._fs.find(self._root, detail=True, withdirs=False)
        prefix = self._root + "/"
        return {
            key[len(prefix):]: ObjectInfo(int(info.get("size") or 0), mtime_ns(info))
            for key, info in sorted(found.items())
            if key.startswith(prefix) and info.get("type", "file") == "file"
        }

    def walk(self) -> Iterator[tuple[str, bool]]:
        """``(name, False)`` for every object below: an object store has no links."""
        for name in self.listing():
            yield name, False

    # -- writing ---------------------------------------------------------------------------------

    def write_atomic(
        self,
        name: str,
        save: Callable[[BinaryIO], None],
        *,
        what: str,
        temp_suffix: str,
        mtime_ns: int | None = None,
    ) -> None:
        """Write through ``save`` into memory, then PUT it as one object (no reader sees part of it).

        ``temp_suffix`` and ``mtime_ns`` are a local folder's concerns: nothing temporary is made,
        and the store sets the time.

        Raises:
            StorageAccessError, StorageUnavailableError: as :func:`~vfx_tasks.storage._client.storage_error`.
        """
        buffer = io.BytesIO()
        save(buffer)
        with storage_errors(self.url_of(name), f"writing {what} to"):
            self._fs.pipe_file(self._key(name), buffer.getvalue())

    def write_new(self, name: str, data: bytes, *, what: str) -> bool:
        """PUT ``data`` at ``name`` only if no object is there (``If-None-Match: *``); whether it was.

        Where the store does not support conditional writes, it is a check then a PUT (a race
        between two writers remains possible there).
        """
        with storage_errors(self.url_of(name), f"writing {what} to"):
            try:
                self._fs.pipe_file(self._key(name), data, mode="create")
            except FileExistsError:
                return False
            except (TypeError, NotImplementedError):
                if self._fs.exists(self._key(name)):
                    return False
                self._fs.pipe_file(self._key(name), data)
        return True

    @contextmanager
    def locked(self, name: str) -> Iterator[int]:
        """No lock to take: nothing appends to an object, so a rewrite races only with rewrites."""
        yield -1

    def check_appendable(self, name: str) -> None:
        """Nothing to refuse: no object is appended to (rows go to the ledger instead)."""

    def append(self, name: str, data: bytes, *, header: bytes = b"") -> None:
        raise OutputError(
            f"{self.url_of(name)} is in object storage, where nothing can be appended; its rows are "
            "written whole (vfx-enqueue --wait, vfx-status --write-index)."
        )

    def open_writable(self, name: str) -> int:
        raise ConfigurationError(
            f"{self.url_of(name)}: an HDF5 file cannot be written into object storage directly. Export "
            "to a local .h5 file and copy it (aws s3 cp, gsutil cp)."
        )

    def rename(self, old: str, new: str) -> None:
        raise ConfigurationError(f"{self.url_of(old)}: objects are not renamed here.")

    def remove_temp_files(self, *, of: str | None = None) -> list[str]:
        """Nothing to remove: a PUT leaves no temporary object behind."""
        return []


def fetch_object(
    url: str,
    destination: Path,
    *,
    storage_options: Mapping[str, Any] | None = None,
    max_bytes: int,
) -> Path:
    """Download the object ``url`` to ``destination`` (through ``<destination>.part``, renamed once
    complete, so a broken transfer never passes for the video); return ``destination``.

    Raises:
        ObjectNotFoundError: the object is gone (deleted after the listing).
        UnsafeFileError: it is larger than ``max_bytes``.
        StorageAccessError, StorageUnavailableError: as :func:`~vfx_tasks.storage._client.storage_error`.
    """
    url = normalize_url(url, what="video URL")
    fs = filesystem(url, storage_options)
    key = fs._strip_protocol(url)
    part = destination.with_name(destination.name + ".part")
    with storage_errors(url, "fetching"):
        size = int(fs.info(key).get("size") or 0)
        if size > max_bytes:
            raise UnsafeFileError(
                f"{url} holds {size} bytes, more than VFX_MAX_VIDEO_BYTES ({max_bytes}); it is not fetched. "
                "Raise the limit on the workers if the video is genuine."
            )
        fs.get_file(key, str(part))
    got = part.stat().st_size
    if got != size:
        part.unlink(missing_ok=True)
        raise StorageUnavailableError(f"Fetched {got} of the {size} bytes of {url}; the task is retried.")
    part.rename(destination)
    return destination


def list_objects(url: str, *, storage_options: Mapping[str, Any] | None = None) -> dict[str, ObjectInfo]:
    """Every object below the folder ``url`` by name (one paged listing); see :meth:`RemoteFolder.listing`."""
    return RemoteFolder.open(url, storage_options=storage_options).listing()
