"""Atomic writes land whole, with the mode a plain write would give, and leave nothing behind on error."""

import errno
import os
import stat

import pytest

import fflab.io
from fflab.errors import WriteError
from fflab.io import atomic_path, fcntl, folder_lock, write_json_atomic, write_text_atomic, write_text_new


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_get_the_umask_mode_not_tempfiles_owner_only_one(tmp_path, umask_022):
    write_text_atomic(tmp_path / "a.txt", "hello")
    write_json_atomic(tmp_path / "sub" / "b.json", {"x": 1})
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert mode(tmp_path / "a.txt") == mode(tmp_path / "sub" / "b.json") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "sub"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_file_system_that_cannot_fsync_still_gets_the_atomic_write_but_a_failing_disk_is_an_error(
    tmp_path, monkeypatch
):
    def refuse(code):
        def fsync(fd):
            raise OSError(code, os.strerror(code))

        return fsync

    monkeypatch.setattr(fflab.io.os, "fsync", refuse(errno.EINVAL))  # e.g. some FUSE and network mounts
    write_text_atomic(tmp_path / "a.txt", "kept")
    assert (tmp_path / "a.txt").read_text() == "kept"
    monkeypatch.setattr(fflab.io.os, "fsync", refuse(errno.EIO))
    with pytest.raises(WriteError, match=r"a\.txt: input/output error.*previous file is unchanged") as err:
        write_text_atomic(tmp_path / "a.txt", "lost")
    assert isinstance(err.value, OSError) and err.value.errno == errno.EIO
    assert (tmp_path / "a.txt").read_text() == "kept" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_failed_exclusive_write_leaves_no_file_that_would_pass_for_a_complete_one(tmp_path, monkeypatch):
    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fflab.io.os, "fsync", disk_full)
    with pytest.raises(WriteError, match=r"config\.toml: no space left on the device; nothing was written"):
        write_text_new(tmp_path / "config.toml", "x = 1\n")
    assert not (tmp_path / "config.toml").exists()
    monkeypatch.undo()
    write_text_new(tmp_path / "config.toml", "x = 1\n")
    with pytest.raises(FileExistsError):
        write_text_new(tmp_path / "config.toml", "x = 2\n")
    assert (tmp_path / "config.toml").read_text() == "x = 1\n"


@pytest.mark.skipif(fcntl is None, reason="no advisory locks on this platform")
def test_a_folder_lock_excludes_a_second_holder_and_a_file_system_without_locks_only_warns(tmp_path, monkeypatch):
    with folder_lock(tmp_path):
        with pytest.raises(BlockingIOError), folder_lock(tmp_path):
            pass
    with folder_lock(tmp_path):  # released when the first holder left
        pass

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))  # NFS without a lock daemon

    monkeypatch.setattr(fflab.io.fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="cannot lock .*No locks available"), folder_lock(tmp_path):
        pass
    with pytest.raises(FileNotFoundError), folder_lock(tmp_path / "missing"):
        pass
