"""A local output folder, opened once: every file below it is reached from that folder's descriptor.

A task's paths are checked when it starts and written minutes later, and whoever can write inside
the folder may meanwhile replace a sub-folder or a file with a symbolic link leading out of it.
So nothing here goes through a path string again: each folder on the way down is opened with
``O_NOFOLLOW | O_DIRECTORY`` relative to its parent's descriptor, each file with ``O_NOFOLLOW``,
and a link met anywhere is an :class:`~vfx_tasks.errors.UnsafeFileError` instead of a detour. A
read checks with ``fstat`` that it got a regular file (``O_NONBLOCK``, so a FIFO cannot hang the
open) and refuses one larger than its bound before reading a byte. A write goes to a new
temporary file (``O_EXCL``) and is renamed into place inside the same folder descriptor.

Outside this package nothing opens a file of an output folder by its path. A folder in object
storage is :class:`~vfx_tasks.storage.remote.RemoteFolder`, with the same public methods.
"""

# long: every way into the folder (walking down, reading, writing, appending, listing) shares one
# descriptor discipline and one translation of errno into errors; split, a path could slip past it.

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from vfx_tasks.errors import OutputError, UnsafeFileError, VfxError
from vfx_tasks.storage.names import TEXT_TEMP_SUFFIX, is_temp_name, temp_name, temp_name_pattern

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_WRITABLE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: What ``link`` fails with on a file system that has no hard links.
_NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK)
_NO_LINKS = "an output folder's files and folders must be themselves, not links to elsewhere"


class LocalFolder:
    """An open folder on a local (or network-mounted) file system; a context manager that closes it.

    Names given to its methods are relative POSIX paths below it (``a/b/v.npy``).
    """

    #: Rows are appended to ``index.csv`` under a lock as videos finish.
    can_append = True
    #: A write can give a file its source's modification time (exports compare them exactly).
    keeps_mtime = True

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        #: Where the folder was when it was opened: for messages only, never opened again.
        self.path = path

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = False) -> LocalFolder:
        """Open the folder ``path``, made first if ``create``. Links in ``path`` itself are followed:
        whoever gave it chose them (a user's command line); below it, none is.

        Raises:
            OutputError: it is missing (and not ``create``), not a folder, or cannot be made.
        """
        try:
            if create:
                os.makedirs(path, exist_ok=True)
            return cls(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), Path(path))
        except OSError as e:
            raise OutputError(f"Cannot open the folder {path}: {e}. Check the path and permissions.") from e

    @classmethod
    def open_under(
        cls, path: str | os.PathLike[str], roots: Sequence[Path], *, create: bool = True
    ) -> LocalFolder:
        """Open ``path`` by walking down from the root that holds it, following no link below the root.

        ``path`` is resolved first (links that lead to a place inside a root are fine), then opened
        one folder at a time from the root's descriptor; a folder replaced by a link in between
        stops the walk. The roots themselves are followed: they come from the worker's settings.

        Raises:
            UnsafeFileError: ``path`` is under no root, or a folder on the way is now a link.
            OutputError: a folder cannot be opened or made.
        """
        try:
            resolved = Path(path).resolve()
        except (OSError, RuntimeError) as e:  # a symlink loop
            raise UnsafeFileError(f"{path} cannot be resolved ({e}).") from e
        for root in roots:
            root = Path(root).resolve()
            if resolved.is_relative_to(root):
                break
        else:
            raise UnsafeFileError(f"{path} is not under any of {', '.join(map(str, roots)) or 'no roots'}.")
        folder = cls.open(root)
        parts = resolved.relative_to(root).parts
        if not parts:
            return folder
        with folder:
            try:
                fd = folder._walk(parts, create=create)
            except OSError as e:
                raise folder._failure("/".join(parts), e, "open the folder") from e
        return cls(fd, resolved)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> LocalFolder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalFolder({str(self.path)!r})"

    # -- folders ---------------------------------------------------------------------------------

    def _walk(self, parts: Sequence[str], *, create: bool) -> int:
        """A new descriptor of the folder ``parts`` below this one (the caller closes it).

        Raises:
            UnsafeFileError: a folder on the way is a link.
            FileNotFoundError: one is missing (and not ``create``).
            OSError: one cannot be opened or made.
        """
        fd = os.dup(self._fd)
        for depth, part in enumerate(parts, start=1):
            try:
                child = self._open_dir(fd, part, "/".join(parts[:depth]), create=create)
            finally:
                os.close(fd)
            fd = child
        return fd

    def _open_dir(self, parent: int, part: str, shown: str, *, create: bool) -> int:
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as e:
            if e.errno in (errno.ENOTDIR, errno.ELOOP) and _is_link(parent, part):
                raise self._link_error(shown) from e
            raise
        try:
            os.mkdir(part, 0o777, dir_fd=parent)
        except FileExistsError:
            pass  # made meanwhile by another writer
        return self._open_dir(parent, part, shown, create=False)

    @contextmanager
    def _parent(self, name: str, *, create: bool) -> Iterator[tuple[int, str]]:
        """``(descriptor of the folder holding name, its base name)``; the descriptor is closed after."""
        parts = _split(name)
        fd = self._walk(parts[:-1], create=create)
        try:
            yield fd, parts[-1]
        finally:
            os.close(fd)

    def _link_error(self, name: str) -> UnsafeFileError:
        return UnsafeFileError(f"{self.path / name} is a symbolic link; {_NO_LINKS}. Replace it with the "
                               "file or folder itself, and check who else can write there.")

    def _failure(self, name: str, error: OSError, doing: str) -> VfxError:
        """The error to raise for ``error`` met while ``doing`` ``name``: a link on the way, or I/O."""
        if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO) and self._is_link_on_the_way(name):
            return self._link_error(name)
        if error.errno == errno.ENXIO:  # a FIFO or a socket, opened without blocking
            return UnsafeFileError(f"{self.path / name} is not a regular file; nothing is written to it.")
        return OutputError(f"Cannot {doing} {self.path / name}: {error}. Check free space and permissions.")

    def _is_link_on_the_way(self, name: str) -> bool:
        parts = _split(name)
        fd = os.dup(self._fd)
        try:
            for part in parts:
                if _is_link(fd, part):
                    return True
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except OSError:
            return False
        finally:
            os.close(fd)
        return False

    # -- reading ---------------------------------------------------------------------------------

    @contextmanager
    def open_regular(self, name: str, *, limit: int) -> Iterator[BinaryIO | None]:
        """The file ``name`` open for reading, or ``None`` when it (or its folder) is missing.

        Raises:
            UnsafeFileError: a link (there or on the way), not a regular file, or larger than
                ``limit`` bytes.
            OutputError: it cannot be read.
        """
        try:
            with self._parent(name, create=False) as (parent, base):
                fd = os.open(base, _READ_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            fd = -1
        except OSError as e:
            failure = self._failure(name, e, "read")
            if e.errno != errno.ENOTDIR or isinstance(failure, UnsafeFileError):
                raise failure from e
            fd = -1  # a file where a folder should be: the file asked for is not there
        if fd < 0:
            yield None
            return
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise UnsafeFileError(f"{self.path / name} is not a regular file; it is not read.")
            if info.st_size > limit:
                raise self._too_big(name, info.st_size, limit)
            yield f  # type: ignore[misc]

    def _too_big(self, name: str, size: int, limit: int) -> UnsafeFileError:
        return UnsafeFileError(
            f"{self.path / name} holds {size} bytes, more than the {limit} any file of its kind may; "
            "it is not read. Move it away (or rebuild it) and run again."
        )

    def read_bytes(self, name: str, *, limit: int) -> bytes | None:
        """The bytes of ``name``, or ``None`` when it is missing; see :meth:`open_regular`."""
        with self.open_regular(name, limit=limit) as f:
            if f is None:
                return None
            data = f.read(limit + 1)
        if len(data) > limit:  # it grew after the check
            raise self._too_big(name, len(data), limit)
        return data

    def lstat(self, name: str) -> os.stat_result | None:
        """What ``name`` itself is (a link is not followed), or ``None`` when it is missing.

        Raises:
            UnsafeFileError: a folder on the way is a link.
        """
        try:
            with self._parent(name, create=False) as (parent, base):
                return _lstat_or_none(parent, base)
        except FileNotFoundError:
            return None
        except OSError as e:
            failure = self._failure(name, e, "read")
            if isinstance(failure, UnsafeFileError):
                raise failure from e
            return None

    def walk(self) -> Iterator[tuple[str, bool]]:
        """``(name, is_link)`` of every non-folder below; links are reported, never followed.

        One folder is open at a time (each reached from this one again), and no recursion: a tree
        of any depth costs no descriptors and no stack.
        """
        pending = [""]
        while pending:
            prefix = pending.pop()
            try:
                fd = self._walk(prefix.split("/")[:-1], create=False)
            except (OSError, UnsafeFileError):
                continue  # removed, or replaced by a link, meanwhile: nothing of ours to list there
            try:
                with os.scandir(fd) as it:
                    entries = sorted(it, key=lambda entry: entry.name)
            finally:
                os.close(fd)
            folders = []
            for entry in entries:
                if entry.is_symlink():
                    yield prefix + entry.name, True
                elif entry.is_dir(follow_symlinks=False):
                    folders.append(prefix + entry.name + "/")
                elif entry.is_file(follow_symlinks=False):
                    yield prefix + entry.name, False
            pending.extend(reversed(folders))

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
        """Write through ``save`` into a new temporary file beside ``name``, sync it, rename it into place.

        ``mtime_ns`` sets the file's modification time before the rename. A link at ``name`` is
        replaced, not followed.

        Raises:
            UnsafeFileError: a folder on the way is a link.
            OutputError: a folder cannot be made, or the file cannot be written.
        """
        try:
            with self._parent(name, create=True) as (parent, base):
                tmp = temp_name(base, temp_suffix)
                fd = os.open(tmp, _NEW_FILE_FLAGS, 0o644, dir_fd=parent)
                try:
                    with os.fdopen(fd, "wb") as f:
                        save(f)
                        f.flush()
                        os.fchmod(fd, 0o644)
                        if mtime_ns is not None:
                            os.utime(fd, ns=(mtime_ns, mtime_ns))
                        os.fsync(fd)
                    os.replace(tmp, base, src_dir_fd=parent, dst_dir_fd=parent)
                except BaseException:
                    _unlink_quietly(parent, tmp)
                    raise
        except OSError as e:
            raise self._failure(name, e, f"write {what} to") from e

    def write_new(self, name: str, data: bytes, *, what: str) -> bool:
        """Write ``data`` at ``name`` only if nothing is there (a temporary file hard-linked into
        place, which fails when the name exists); whether it was written.

        Raises:
            UnsafeFileError: a folder on the way is a link.
            OutputError: it cannot be written.
        """
        try:
            with self._parent(name, create=True) as (parent, base):
                tmp = temp_name(base, TEXT_TEMP_SUFFIX)
                fd = os.open(tmp, _NEW_FILE_FLAGS, 0o644, dir_fd=parent)
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(fd)
                    try:
                        os.link(tmp, base, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
                    except FileExistsError:
                        return False
                    except OSError as e:
                        if e.errno not in _NO_HARD_LINKS:
                            raise
                        # A file system without hard links (some FUSE and SMB mounts): check, then
                        # rename, as before this existed (two writers may still race there).
                        if _lstat_or_none(parent, base) is not None:
                            return False
                        os.replace(tmp, base, src_dir_fd=parent, dst_dir_fd=parent)
                finally:
                    _unlink_quietly(parent, tmp)
        except OSError as e:
            raise self._failure(name, e, f"write {what} to") from e
        return True

    def listing(self) -> dict[str, os.stat_result]:
        """Every regular file below (links left out), by name, with what ``lstat`` says of it."""
        found = {}
        for name, is_link in self.walk():
            info = None if is_link else self.lstat(name)
            if info is not None and stat.S_ISREG(info.st_mode):
                found[name] = info
        return found

    @contextmanager
    def locked(self, name: str) -> Iterator[int]:
        """``name`` open for appending (made if missing) under an exclusive ``flock``; yields its fd.

        It must be a regular file with one name: through a hard link planted in its place, appends
        would change another file.

        Raises:
            UnsafeFileError: a link, not a regular file, or a file with other names.
            OutputError: it cannot be opened.
        """
        try:
            with self._parent(name, create=True) as (parent, base):
                fd = self._open_locked(parent, base, name)
        except OSError as e:
            raise self._failure(name, e, "open") from e
        try:
            yield fd
        finally:
            os.close(fd)  # also drops the lock

    def _open_locked(self, parent: int, base: str, name: str) -> int:
        while True:
            fd = os.open(base, _APPEND_FLAGS, 0o644, dir_fd=parent)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                info = os.fstat(fd)
                self._check_single_regular(name, info)
                # A rebuild may have renamed a new file over the one we locked: lock that one.
                current = _lstat_or_none(parent, base)
                if current is not None and (current.st_ino, current.st_dev) == (info.st_ino, info.st_dev):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def check_appendable(self, name: str) -> None:
        """Refuse now what :meth:`append` would refuse later: ``name`` a link, not a regular file, or
        a file with other names. A missing one is fine (it will be made).

        Raises:
            UnsafeFileError: as :meth:`locked`.
        """
        info = self.lstat(name)
        if info is not None and stat.S_ISLNK(info.st_mode):
            raise self._link_error(name)
        if info is not None:
            self._check_single_regular(name, info)

    def _check_single_regular(self, name: str, info: os.stat_result) -> None:
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(f"{self.path / name} is not a regular file; nothing is written to it.")
        if info.st_nlink != 1:
            raise UnsafeFileError(
                f"{self.path / name} has {info.st_nlink} names (hard links); writing to it would change "
                "another file too. Move it away and run again."
            )

    def append(self, name: str, data: bytes, *, header: bytes = b"") -> None:
        """Append ``data`` to ``name`` in one synced ``write`` under its lock (``header`` first if new).

        Raises:
            UnsafeFileError, OutputError: as :meth:`locked`.
        """
        with self.locked(name) as fd:
            try:
                os.write(fd, (header if os.fstat(fd).st_size == 0 else b"") + data)
                os.fsync(fd)
            except OSError as e:
                raise OutputError(f"Cannot append to {self.path / name}: {e}. Check free space.") from e

    def open_writable(self, name: str) -> int:
        """A new read-write descriptor of the regular file ``name`` (made if missing), for a writer that
        needs a whole file (HDF5); the caller closes it.

        Raises:
            UnsafeFileError: a link (there or on the way), not a regular file, or one with other names.
            OutputError: it cannot be opened.
        """
        try:
            with self._parent(name, create=True) as (parent, base):
                fd = os.open(base, _WRITABLE_FLAGS, 0o644, dir_fd=parent)
        except OSError as e:
            raise self._failure(name, e, "open") from e
        try:
            self._check_single_regular(name, os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def rename(self, old: str, new: str) -> None:
        """Rename the regular file ``old`` to ``new`` (replacing it), both in this folder's tree.

        Raises:
            UnsafeFileError: ``old`` is not a regular file, or a folder on the way is a link.
            OutputError: it cannot be renamed.
        """
        info = self.lstat(old)
        if info is None or not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(f"{self.path / old} is not a regular file; it is not moved.")
        try:
            with self._parent(old, create=False) as (old_parent, old_base), \
                    self._parent(new, create=True) as (new_parent, new_base):
                os.replace(old_base, new_base, src_dir_fd=old_parent, dst_dir_fd=new_parent)
        except OSError as e:
            raise self._failure(new, e, f"rename {old} to") from e

    def remove_temp_files(self, *, of: str | None = None) -> list[str]:
        """Delete the temporary files of killed writers (of the file ``of`` only, if given); return them.

        Only safe while no other writer of the same files runs.
        """
        if of is None:
            found = [name for name, is_link in self.walk()
                     if not is_link and is_temp_name(name.rsplit("/", 1)[-1])]
        else:
            found = self._temp_files_of(of)
        removed = []
        for name in found:
            try:
                with self._parent(name, create=False) as (parent, base):
                    if _unlink_quietly(parent, base):
                        removed.append(name)
            except (OSError, UnsafeFileError):
                continue  # its folder went away or became a link meanwhile: nothing to remove there
        return removed

    def _temp_files_of(self, name: str) -> list[str]:
        parts = _split(name)
        pattern = temp_name_pattern(parts[-1])
        try:
            fd = self._walk(parts[:-1], create=False)
        except OSError:
            return []
        try:
            with os.scandir(fd) as it:
                names = [e.name for e in it if e.is_file(follow_symlinks=False) and pattern.fullmatch(e.name)]
        finally:
            os.close(fd)
        return sorted("/".join([*parts[:-1], found]) for found in names)


def _split(name: str) -> list[str]:
    parts = PurePosixPath(name).parts
    if not parts or PurePosixPath(name).is_absolute() or any(p in (".", "..") for p in parts):
        raise OutputError(f"Invalid file name ({name!r}): it must stay inside the output folder.")
    return list(parts)


def _is_link(parent: int, base: str) -> bool:
    info = _lstat_or_none(parent, base)
    return info is not None and stat.S_ISLNK(info.st_mode)


def _lstat_or_none(parent: int, base: str) -> os.stat_result | None:
    try:
        return os.stat(base, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _unlink_quietly(parent: int, base: str) -> bool:
    try:
        os.unlink(base, dir_fd=parent)
    except FileNotFoundError:
        return False
    return True
