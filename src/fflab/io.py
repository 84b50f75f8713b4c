"""Atomic writes: a file is either its old self or completely new, never half-written.

Every write here that fails (no space left, no permission, a read-only file system) raises WriteError, an
FFLabError and an OSError at once, whose one-line message names the path, the cause and what was kept; the
temporary file of a failed write is removed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fflab.errors import WriteError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here
    fcntl = None

# fsync refusals that mean "this file system or platform cannot", not "the data is lost"
CANNOT_SYNC = {errno.EINVAL, errno.ENOTSUP, errno.EACCES, errno.EISDIR, errno.EBADF}
# flock refusals that mean "this file system cannot lock" (or the folder cannot be opened to lock it)
CANNOT_LOCK = {errno.ENOLCK, errno.EBADF, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EACCES}

# the causes users meet, in words, and what to do about each
_FULL = "free some space there or write elsewhere"
_LOCKED = "make the folder writable or write elsewhere"
CAUSES = {
    errno.ENOSPC: ("no space left on the device", _FULL),
    errno.EDQUOT: ("disk quota exceeded", _FULL),
    errno.EFBIG: ("file too large for this file system", "write elsewhere"),
    errno.EACCES: ("permission denied", _LOCKED),
    errno.EPERM: ("operation not permitted", _LOCKED),
    errno.EROFS: ("read-only file system", "write elsewhere"),
    errno.EIO: ("input/output error (a failing disk or a lost network mount)", "check the disk or write elsewhere"),
}


def os_error_cause(err: OSError) -> str:
    """The cause of `err` in a few words: 'no space left on the device', 'permission denied', ..."""
    if err.errno in CAUSES:
        return CAUSES[err.errno][0]
    return (err.strerror or str(err) or type(err).__name__).rstrip(".").lower()


def describe_os_error(err: OSError) -> str:
    """One line for an OSError fflab did not name itself: the path it concerns (if any) and the cause."""
    if isinstance(err, WriteError):
        return str(err)
    paths = [os.fsdecode(p) for p in (err.filename, err.filename2) if isinstance(p, str | bytes | os.PathLike)]
    return f"{' -> '.join(paths)}: {os_error_cause(err)}" if paths else os_error_cause(err)


def write_error(path: str | os.PathLike, err: OSError, kept: str) -> WriteError:
    """A WriteError for writing `path` that failed with `err`: 'cannot write PATH: CAUSE; KEPT; REMEDY'.
    `kept` says what is left, e.g. 'the previous file is unchanged'."""
    remedy = CAUSES[err.errno][1] if err.errno in CAUSES else ""
    parts = [f"cannot write {os.fspath(path)}: {os_error_cause(err)}", kept, remedy]
    error = WriteError("; ".join(part for part in parts if part))
    error.errno, error.strerror, error.filename = err.errno, err.strerror, os.fspath(path)
    return error


def _kept(path: Path) -> str:
    return "the previous file is unchanged" if path.exists() else "nothing was written"


def write_text_new(path: str | os.PathLike, text: str) -> None:
    """Create `path` holding `text`, on disk; FileExistsError if it exists (two processes cannot both create
    it). The umask gives it the mode a plain `open` would. A failed write (disk full) removes the file again,
    so that it does not stand for a complete one, and raises WriteError."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise
    except OSError as err:
        raise write_error(path, err, "nothing was written") from None
    try:
        try:
            _write_all(fd, text.encode())
        finally:
            os.close(fd)
        _fsync(path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(path)
        if isinstance(err, OSError):
            raise write_error(path, err, "nothing was written") from None
        raise


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock on folder `path`; BlockingIOError at once if another process holds it.
    The lock lives with the open folder, so a process that dies leaves none behind (no stale lock files).
    Where the file system cannot lock (NFS without a lock daemon, some FUSE and cluster mounts) this warns
    and goes on unlocked; on Windows it does nothing."""
    if fcntl is None:
        yield
        return
    fd = None
    try:
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if fd is not None:
            os.close(fd)
            fd = None
        if e.errno not in CANNOT_LOCK:  # held by another process (EWOULDBLOCK), missing folder, ...
            raise
        warnings.warn(f"cannot lock {path} ({e.strerror}): nothing stops a second process working in it", stacklevel=3)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def create_beside(path: str | os.PathLike, suffix: str, *, folder: bool = False) -> Path:
    """Create a new hidden file (or folder) with a unique name beside `path`, with the mode a plain `open`
    (or `mkdir`) gives under the umask; `tempfile` makes owner-only ones, which would leave shared data and
    run outputs unreadable to others."""
    path = Path(path)
    while True:
        candidate = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            if folder:
                candidate.mkdir(0o777)
            else:
                os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return candidate
        except FileExistsError:
            continue
        except BaseException:  # stopped (Ctrl-C, SIGTERM) after making it: the caller never learns its name
            with contextlib.suppress(OSError):
                candidate.rmdir() if folder else candidate.unlink()
            raise


def _fsync(path: str | os.PathLike) -> None:
    """flush_to_disk, raising the plain OSError."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as err:
        if err.errno in CANNOT_SYNC:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in CANNOT_SYNC:
            raise
    finally:
        os.close(fd)


def flush_to_disk(path: str | os.PathLike) -> None:
    """fsync a file, or a folder's entries (after a rename into it). Where the file system or platform cannot
    (some network and FUSE mounts; folders on Windows), carry on: the write stays atomic, only not yet durable.
    A refusal that means the data did not reach the disk (a network file system out of space) is a WriteError."""
    try:
        _fsync(path)
    except OSError as err:
        raise write_error(path, err, "what it holds may not be on disk") from None


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of `data` to `fd`, however many calls it takes (a nearly full disk takes part of it, then
    refuses the rest with ENOSPC)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "the write made no progress")
        view = view[written:]


def _about(err: OSError, *paths: Path) -> bool:
    """Whether `err` is a refusal to write one of `paths`: it names one of them, or it names no path (as a
    failed write does) and its errno is one a write meets (not, say, a network error met while writing)."""
    if err.filename is None or isinstance(err.filename, int):
        return err.errno in CAUSES
    try:
        return Path(os.fsdecode(err.filename)) in paths
    except TypeError:
        return False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed.

    The new contents reach the disk before the rename, so after a crash or power loss `path` holds the old
    file or the whole new one, never an empty one. A write that fails (also one by the caller's writer into
    the temporary path: an OSError naming it, or naming no path with the errno of a failed write) becomes a
    WriteError naming `path` and the cause; any other error passes through. Either way the temporary file
    is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = create_beside(path, ".tmp")
    except OSError as err:
        raise write_error(path, err, _kept(path)) from None
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, WriteError) and _about(err, tmp, path, path.parent):
            raise write_error(path, err, _kept(path)) from None
        raise
    try:
        _fsync(path.parent)
    except OSError as err:
        raise write_error(path, err, "the new file is in place but may not be on disk yet") from None


class _GuardedFile(io.RawIOBase):
    """An unbuffered binary file that remembers the first OSError its writes met: torch.save may report a full
    disk as "unexpected pos" and other writers may ignore an error, but `atomic_file` still sees the cause."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self.error: OSError | None = None

    def write(self, data) -> int:  # type: ignore[override]
        try:
            _write_all(self._fd, data)
        except OSError as err:
            self.error = self.error or err
            raise
        return memoryview(data).nbytes

    def fileno(self) -> int:
        return self._fd

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self._fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def close(self) -> None:
        if not self.closed:
            super().close()
            os.close(self._fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[io.RawIOBase]:
    """`atomic_path`, with the temporary file open for binary writing (unbuffered: each write reaches the
    operating system at once). The first OSError a write meets decides the outcome, even where the writer
    turned it into another error (torch.save) or ignored it: WriteError naming `path` and the cause."""
    with atomic_path(path) as tmp:
        out = _GuardedFile(os.open(tmp, os.O_WRONLY | os.O_TRUNC))
        try:
            yield out
        except Exception:
            if out.error is not None:
                raise write_error(path, out.error, _kept(Path(path))) from None
            raise
        finally:
            out.close()
        if out.error is not None:  # the writer ignored it
            raise write_error(path, out.error, _kept(Path(path)))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as out:
        out.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


class AppendFile:
    """A log that grows by whole records (a run's metrics.jsonl): each `write` reaches the operating system
    complete, or the file is cut back to what it held before and WriteError names the path and the cause.
    Nothing is buffered: each write is a system call."""

    def __init__(self, path: str | os.PathLike, *, new: bool = False) -> None:
        self.path = Path(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if new else 0)
        try:
            self._fd: int | None = os.open(self.path, flags, 0o666)
        except OSError as err:
            raise write_error(self.path, err, _kept(self.path)) from None

    def write(self, text: str) -> int:
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        size = os.fstat(self._fd).st_size
        try:
            _write_all(self._fd, text.encode())
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)  # no torn record: the file ends at its last complete one
            raise write_error(self.path, err, "its earlier records are kept") from None
        return len(text)

    def sync(self) -> None:
        """Put what was written on disk (WriteError if the disk refuses)."""
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as err:
                if err.errno not in CANNOT_SYNC:
                    raise write_error(self.path, err, "what it holds may not be on disk") from None

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> AppendFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_append(path: str | os.PathLike, *, new: bool = False) -> AppendFile:
    """Open `path` for appending whole records (created if missing; emptied first if `new`): the drop-in for
    `open(path, "w" if new else "a")` whose failures are WriteErrors and leave no torn record."""
    return AppendFile(path, new=new)
