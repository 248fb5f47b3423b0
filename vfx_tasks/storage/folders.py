"""An output folder of either kind, chosen by its location: a local path or an object-storage URL.

:class:`Folder` is what both :class:`~vfx_tasks.storage.local.LocalFolder` and
:class:`~vfx_tasks.storage.remote.RemoteFolder` offer; the code reading and writing features,
manifests and indexes is written against it and never asks which one it holds, except through
:attr:`Folder.can_append` (the index) and :attr:`Folder.keeps_mtime` (exports).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, BinaryIO, Protocol

from vfx_tasks.storage.local import LocalFolder
from vfx_tasks.storage.remote import RemoteFolder
from vfx_tasks.storage.urls import is_url


class FileInfo(Protocol):
    """What a folder's ``lstat`` gives: ``os.stat_result`` or an object's :class:`ObjectInfo`."""

    @property
    def st_size(self) -> int: ...

    @property
    def st_mtime_ns(self) -> int: ...

    @property
    def st_mode(self) -> int: ...


class Folder(Protocol):
    """An open output folder; names are relative POSIX paths below it (``a/b/v.npy``)."""

    #: Whether rows can be appended to a file (``index.csv``) as videos finish.
    can_append: bool
    #: Whether a write can set a file's modification time.
    keeps_mtime: bool

    @property
    def path(self) -> Any:
        """Where the folder is, joined with ``/`` for messages (a ``Path`` or a ``UrlPath``)."""

    def __enter__(self) -> Folder: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def open_regular(self, name: str, *, limit: int) -> AbstractContextManager[BinaryIO | None]: ...

    def read_bytes(self, name: str, *, limit: int) -> bytes | None: ...

    def lstat(self, name: str) -> FileInfo | None: ...

    def listing(self) -> Mapping[str, FileInfo]: ...

    def walk(self) -> Iterator[tuple[str, bool]]: ...

    def write_atomic(
        self, name: str, save: Callable[[BinaryIO], None], *, what: str, temp_suffix: str,
        mtime_ns: int | None = None,
    ) -> None: ...

    def write_new(self, name: str, data: bytes, *, what: str) -> bool: ...

    def locked(self, name: str) -> AbstractContextManager[int]: ...

    def check_appendable(self, name: str) -> None: ...

    def append(self, name: str, data: bytes, *, header: bytes = b"") -> None: ...

    def open_writable(self, name: str) -> int: ...

    def rename(self, old: str, new: str) -> None: ...

    def remove_temp_files(self, *, of: str | None = None) -> list[str]: ...


#: An open folder, or the location (path or URL) of one.
FolderLike = LocalFolder | RemoteFolder | str | os.PathLike[str]


def is_open_folder(folder: object) -> bool:
    return isinstance(folder, (LocalFolder, RemoteFolder))


def folder_exists(folder: FolderLike) -> bool:
    """Whether ``folder`` is open, a URL (a prefix exists as soon as it is named), or a local folder."""
    if is_open_folder(folder):
        return True
    return is_url(str(folder)) or os.path.isdir(folder)


@contextmanager
def open_folder(
    folder: FolderLike, *, create: bool = False, storage_options: Mapping[str, Any] | None = None
) -> Iterator[LocalFolder | RemoteFolder]:
    """``folder`` itself when it is open already (left open), else the folder at that path or URL,
    closed after (``storage_options`` for a URL's client)."""
    if isinstance(folder, (LocalFolder, RemoteFolder)):
        yield folder
        return
    if is_url(str(folder)):
        with RemoteFolder.open(str(folder), storage_options=storage_options, create=create) as remote:
            yield remote
        return
    with LocalFolder.open(folder, create=create) as opened:
        yield opened


def open_folder_under(
    location: str,
    roots: Sequence[Any],
    *,
    storage_options: Mapping[str, Any] | None = None,
    create: bool = True,
) -> LocalFolder | RemoteFolder:
    """A worker's output folder: ``location`` opened from the root that holds it (a local folder
    walked down without following links, or a URL below a URL root).

    Raises:
        UnsafeFileError: it is under none of ``roots``, or a folder on the way is a link.
        OutputError: a local folder cannot be opened or made.
    """
    if is_url(location):
        return RemoteFolder.open_under(location, roots, storage_options=storage_options, create=create)
    local_roots = [root for root in roots if not is_url(str(root))]
    return LocalFolder.open_under(location, local_roots, create=create)
