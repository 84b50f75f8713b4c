"""Atomic writes: a file is either its old self or completely new, never half-written."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here
    fcntl = None

# fsync refusals that mean "this file system or platform cannot", not "the data is lost"
CANNOT_SYNC = {errno.EINVAL, errno.ENOTSUP, errno.EACCES, errno.EISDIR, errno.EBADF}
# flock refusals that mean "this file system cannot lock" (or the folder cannot be opened to lock it)
CANNOT_LOCK = {errno.ENOLCK, errno.EBADF, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EACCES}


def write_text_new(path: str | os.PathLike, text: str) -> None:
    """Create `path` holding `text`, on disk; FileExistsError if it exists (two processes cannot both create
    it). The umask gives it the mode a plain `open` would. A failed write (disk full) removes the file again,
    so that it does not stand for a complete one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        flush_to_disk(path)
    except BaseException:
        os.unlink(path)
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


def flush_to_disk(path: str | os.PathLike) -> None:
    """fsync a file, or a folder's entries (after a rename into it). Where the file system or platform cannot
    (some network and FUSE mounts; folders on Windows), carry on: the write stays atomic, only not yet durable."""
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed.

    The new contents reach the disk before the rename, so after a crash or power loss `path` holds the old
    file or the whole new one, never an empty one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_beside(path, ".tmp")
    try:
        yield tmp
        flush_to_disk(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    flush_to_disk(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
