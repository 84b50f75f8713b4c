"""Faults a new user meets (a full disk, a read-only run directory, a damaged resume.pt, stray labels, NaN inputs,
mixed image sizes), each tried on small data: the message, the exit status, and that nothing complete was lost.

docs/reliability.md lists these faults and names the test that keeps each row true.

Faults on disk are injected at the system calls fflab.io writes through (os.open, os.write, os.mkdir), for the
files of one folder only, so the tests behave the same for root (whom chmod does not stop) and on any machine.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from localhttp import serve
from repo import config_path, shipped_config
from test_data_cifar import make_folder, save_image
from test_data_idx import idx_bytes
from test_data_registry import write_idx_set

from fflab.checkpoint import (
    SETTINGS,
    TRAINING_STATE,
    WEIGHTS,
    load_training_state,
    save_checkpoint,
    save_training_state,
)
from fflab.cli import main
from fflab.data import Dataset, load_dataset
from fflab.data.download import download_file
from fflab.data.registry import FileSpec
from fflab.errors import DataError, WriteError
from fflab.estimator import FFClassifier
from fflab.io import _GuardedFile, open_append
from fflab.models import build_model
from fflab.training.run import train_run

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
QUICK = ["train.epochs=3", "model.hidden=[32,32]", "train.monitor_size=100", "train.threads=1"]


@dataclass
class Fault:
    """Files under `folder` whose name holds `name`, after the first `skip` of them, fail with errno `code`:
    at "open" (created or opened for writing; folders made), or at "write" after `budget` bytes."""

    folder: Path
    code: int
    name: str = ""
    at: str = "write"
    skip: int = 0
    budget: int = 0
    seen: set = field(default_factory=set)
    budgets: dict = field(default_factory=dict)  # open file descriptor -> bytes it may still write
    hits: int = 0

    def applies(self, path) -> bool:
        p = Path(os.fsdecode(path)).absolute()
        if not p.is_relative_to(self.folder) or self.name not in p.name:
            return False
        self.seen.add(p)
        return len(self.seen) > self.skip

    def refuse(self, path=None) -> OSError:
        self.hits += 1
        return OSError(self.code, os.strerror(self.code), *([os.fsdecode(path)] if path is not None else []))


@contextlib.contextmanager
def disk_fault(folder: Path, code: int, **options) -> Iterator[Fault]:
    """Inject `Fault(folder, code, **options)` while the block runs (then the disk "has space again")."""
    fault = Fault(Path(folder).absolute(), code, **options)
    real_open, real_write, real_close, real_mkdir = os.open, os.write, os.close, os.mkdir

    def fake_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & WRITE_FLAGS and fault.applies(path):
            if fault.at == "open":
                raise fault.refuse(path)
            fd = real_open(path, flags, mode, dir_fd=dir_fd)
            fault.budgets[fd] = fault.budget
            return fd
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def fake_write(fd, data):
        if fd not in fault.budgets:
            return real_write(fd, data)
        left = fault.budgets[fd]
        if left <= 0:
            raise fault.refuse()
        written = real_write(fd, memoryview(data)[:left])
        fault.budgets[fd] = left - written
        return written

    def fake_close(fd):
        fault.budgets.pop(fd, None)
        return real_close(fd)

    def fake_mkdir(path, mode=0o777, *, dir_fd=None):
        if fault.at == "open" and not os.path.exists(path) and fault.applies(path):
            raise fault.refuse(path)
        return real_mkdir(path, mode, dir_fd=dir_fd)

    os.open, os.write, os.close, os.mkdir = fake_open, fake_write, fake_close, fake_mkdir
    try:
        yield fault
    finally:
        os.open, os.write, os.close, os.mkdir = real_open, real_write, real_close, real_mkdir


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files (atomic writes' .tmp, downloads' .part) anywhere under `folder`."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(err: str) -> str:
    """The CLI's message: a single line, no traceback."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fflab: error: "), err
    return lines[0]


def train_args(run: Path, *overrides: str) -> list[str]:
    sets = [arg for setting in (*QUICK, *overrides) for arg in ("--set", setting)]
    return ["train", config_path("digits-ff"), "--out", str(run), "--no-progress", *sets]


class Stop(Exception):
    """Stands for the process being killed."""


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A run of 3 epochs stopped after saving epoch 1's state (epoch 2's metrics line written, its state not)."""
    run = tmp_path_factory.mktemp("stopped") / "run"

    def log(line: str) -> None:
        if line.startswith("epoch   2/"):
            raise Stop

    with pytest.raises(Stop):
        train_run(shipped_config("digits-ff", QUICK), run, log=log, progress=False)
    return run


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    train_run(shipped_config("digits-ff", [*QUICK, "train.epochs=1"]), run, log=lambda line: None, progress=False)
    return run


# ---- safe writes ---------------------------------------------------------------------------------------------

STATE_FAULTS = {
    "no-space": (errno.ENOSPC, "write", "no space left on the device"),
    "no-permission": (errno.EACCES, "open", "permission denied"),
    "read-only": (errno.EROFS, "open", "read-only file system"),
}


@pytest.mark.parametrize("case", sorted(STATE_FAULTS))
def test_a_refused_epoch_state_save_is_one_line_and_the_last_state_resumes(tmp_path, capsys, case):
    code, at, cause = STATE_FAULTS[case]
    run = tmp_path / "run"
    with disk_fault(run, code, name=TRAINING_STATE, at=at, skip=1) as fault:  # epoch 1's state saves, 2's fails
        assert main(train_args(run)) == 2
    assert fault.hits >= 1  # torch.save writes on after a refused write
    line = one_line_error(capsys.readouterr().err)
    assert f"cannot write {run / TRAINING_STATE}: {cause}; the previous file is unchanged" in line
    assert "unexpected pos" not in line
    assert load_training_state(run)["epoch"] == 1
    assert leftovers(run) == [] and not (run / "summary.json").exists()

    assert main(["resume", str(run), "--no-progress"]) == 0  # the disk has room again
    assert "resumed after epoch 1" in capsys.readouterr().out
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    assert leftovers(run) == []


END_FAULTS = {  # the writes after the last epoch: weights, plots, summary
    "weights-no-space": (WEIGHTS, errno.ENOSPC, "write", "no space left on the device"),
    "plot-read-only": ("plots/training_curves.png", errno.EROFS, "open", "read-only file system"),
    "summary-no-space": ("summary.json", errno.ENOSPC, "write", "no space left on the device"),
}


@pytest.mark.parametrize("case", sorted(END_FAULTS))
def test_a_refused_write_after_the_last_epoch_keeps_the_training_state_so_resume_finishes(tmp_path, capsys, case):
    file, code, at, cause = END_FAULTS[case]
    run = tmp_path / "run"
    with disk_fault(run, code, name=Path(file).name, at=at):
        assert main(train_args(run)) == 2
    line = one_line_error(capsys.readouterr().err)
    assert f"cannot write {run / file}: {cause}; nothing was written" in line
    assert load_training_state(run)["epoch"] == 3  # no result lost ...
    assert not (run / "summary.json").exists() and leftovers(run) == []  # ... and none claimed

    assert main(["resume", str(run), "--no-progress"]) == 0
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3
    assert not (run / TRAINING_STATE).exists() and leftovers(run) == []


def test_a_disk_that_fills_mid_write_keeps_the_previous_checkpoint_and_state(tmp_path):
    cfg = shipped_config("digits-ff", QUICK)
    torch.manual_seed(0)
    before = build_model(cfg, 64, 10)
    meta = {"input_dim": 64, "num_classes": 10}
    save_checkpoint(tmp_path, before, cfg, **meta)
    save_training_state(tmp_path, 1, before, {"step": 1})
    kept = snapshot(tmp_path)
    torch.manual_seed(1)
    after = build_model(cfg, 64, 10)

    with disk_fault(tmp_path, errno.ENOSPC, name=WEIGHTS, budget=100), pytest.raises(WriteError) as err:
        save_checkpoint(tmp_path, after, cfg, **meta)
    assert str(err.value).startswith(f"cannot write {tmp_path / WEIGHTS}: no space left on the device; the previous")
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)

    # torch.save turns the refused write into "RuntimeError: [enforce fail at inline_container.cc] unexpected pos"
    with disk_fault(tmp_path, errno.ENOSPC, name=TRAINING_STATE, budget=1000), pytest.raises(WriteError) as err:
        save_training_state(tmp_path, 2, after, {"step": 2})
    assert f"cannot write {tmp_path / TRAINING_STATE}: no space left on the device; the previous file" in str(err.value)

    assert snapshot(tmp_path) == kept and leftovers(tmp_path) == []
    assert load_training_state(tmp_path)["epoch"] == 1
    assert json.loads((tmp_path / SETTINGS).read_text())["num_classes"] == 10


def test_a_metrics_line_refused_mid_write_leaves_no_torn_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with open_append(path, new=True) as metrics:
        metrics.write('{"epoch": 1}\n')
        with disk_fault(tmp_path, errno.ENOSPC, budget=0):  # files opened before are not affected ...
            metrics.write('{"epoch": 2}\n')
    with disk_fault(tmp_path, errno.ENOSPC, budget=5), open_append(path) as metrics:  # ... those opened in it are
        with pytest.raises(WriteError, match=r"metrics\.jsonl: no space left on the device; its earlier records"):
            metrics.write('{"epoch": 3}\n')
    assert path.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    with disk_fault(tmp_path, errno.EROFS, at="open"), pytest.raises(WriteError, match="read-only file system"):
        open_append(path)


def _dev_full() -> bool:
    """Whether /dev/full is the device whose every write the kernel refuses with ENOSPC (Linux)."""
    with contextlib.suppress(OSError):
        return stat.S_ISCHR(os.stat("/dev/full").st_mode)
    return False


@pytest.mark.skipif(not _dev_full(), reason="needs the /dev/full device")
def test_the_kernels_own_no_space_error_is_what_fflab_reports():
    with pytest.raises(WriteError, match="^cannot write /dev/full: no space left on the device; its earlier records"):
        open_append("/dev/full").write("a record\n")
    # atomic_file watches the writes itself: torch.save passes the kernel's error on, or (when a later write of
    # the archive fails) reports its own "unexpected pos"; either way the guarded file keeps the cause
    guarded = _GuardedFile(os.open("/dev/full", os.O_WRONLY))
    with guarded, pytest.raises((OSError, RuntimeError)):
        torch.save({"w": torch.zeros(1000)}, guarded)
    assert guarded.error is not None and guarded.error.errno == errno.ENOSPC


def test_eval_in_a_read_only_run_directory_names_the_file_and_changes_nothing(finished_run, capsys):
    kept = snapshot(finished_run)
    with disk_fault(finished_run, errno.EROFS, at="open"):
        assert main(["eval", str(finished_run), "--no-progress"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert line == (
        f"fflab: error: cannot write {finished_run / 'eval.json'}: read-only file system; nothing was written; "
        "write elsewhere"
    )
    assert snapshot(finished_run) == kept and leftovers(finished_run) == []


def test_train_into_a_read_only_run_directory_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with disk_fault(run, errno.EROFS, at="open"):
        assert main(train_args(run)) == 2
    assert one_line_error(capsys.readouterr().err) == f"fflab: error: {run / 'plots'}: read-only file system"
    assert list(run.iterdir()) == []


def test_a_download_onto_a_full_disk_names_the_file_and_tries_no_other_mirror(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    content = gzip.compress(os.urandom(50_000))
    (served / "blob.gz").write_bytes(content)
    spec = FileSpec("blob.gz", "images", md5=hashlib.md5(content).hexdigest())
    dest = tmp_path / "data"
    dest.mkdir()
    with serve(served) as url, disk_fault(dest, errno.ENOSPC, budget=10_000) as fault:
        with pytest.raises(WriteError) as err:
            download_file(spec, dest, [url, url], progress=False)
    assert str(err.value) == (
        f"cannot write {dest / 'blob.gz'}: no space left on the device; nothing was written; "
        "free some space there or write elsewhere"
    )
    assert fault.hits == 1 and list(dest.iterdir()) == []


def test_an_image_cache_the_disk_refuses_warns_and_the_data_still_loads(tmp_path, monkeypatch):
    make_folder(tmp_path / "images", ("a", "b"))
    cache = tmp_path / "cache"
    monkeypatch.setenv("FFLAB_CACHE", str(cache))
    with disk_fault(cache, errno.ENOSPC, budget=200):
        with pytest.warns(UserWarning, match=r"could not cache decoded images: cannot write .*no space left"):
            ds = load_dataset("image-folder", path=tmp_path / "images", progress=False)
    assert ds.train_x.shape == (4, 3, 4, 4) and leftovers(cache) == [] and not list(cache.rglob("*.npz"))


DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "not-a-state": lambda data: b"PK\x03\x04 something else entirely",
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_corrupt_training_state_is_named_and_left_as_it_is(stopped_run, tmp_path, capsys, damage):
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    state = run / TRAINING_STATE
    state.write_bytes(DAMAGE[damage](state.read_bytes()))
    kept = snapshot(run)
    assert main(["resume", str(run), "--no-progress"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert line.startswith(f"fflab: error: {state}: unreadable training state (")
    assert snapshot(run) == kept and not (run / "summary.json").exists()


# ---- data validation -----------------------------------------------------------------------------------------


def stray_label_folder(folder: Path) -> Path:
    """An MNIST-format folder whose 40 training labels are 0..9 but for one 42, at index 17."""
    write_idx_set(folder, n_train=40, n_test=8)
    labels = (np.arange(40) % 10).astype(np.uint8)
    labels[17] = 42
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    (folder / "test-labels-idx1-ubyte").write_bytes(idx_bytes((np.arange(8) % 10).astype(np.uint8)))
    return folder


def test_a_stray_idx_label_is_named_not_made_a_class(tmp_path, capsys):
    folder = stray_label_folder(tmp_path / "mine")
    config = tmp_path / "mine.toml"
    config.write_text(f'[data]\nname = "idx"\npath = "{folder}"\n\n[model]\nhidden = [16]\nlabel = "concat"\n')
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--no-progress", "--set", "train.epochs=1"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert (
        f"{folder / 'train-labels-idx1-ubyte.gz'}: classes 10..41 have no training sample, yet label 42 occurs "
        "(first at index 17, 1 sample)"
    ) in line
    assert f"name them in {folder / 'classes.txt'}" in line
    assert not (run / "config.toml").exists() and not (run / WEIGHTS).exists()

    assert main(["data", "verify", "idx", "--path", str(folder)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {folder / 'train-labels-idx1-ubyte.gz'}: " in out and "label 42 occurs" in out

    # the explicit setting: a user who means 43 classes says so in classes.txt (empty classes allowed) ...
    (folder / "classes.txt").write_text("".join(f"class {k}\n" for k in range(43)))
    ds = load_dataset("idx", path=folder)
    assert ds.num_classes == 43 and ds.class_names[42] == "class 42"
    # ... and a label beyond the classes it names is an error naming file, index and value
    (folder / "classes.txt").write_text("".join(f"{k}\n" for k in range(10)))
    with pytest.raises(
        DataError, match=r"train-labels-idx1-ubyte\.gz holds label 42 at index 17; this data set has 10"
    ):
        load_dataset("idx", path=folder)


def test_a_test_label_no_training_sample_has_is_named(tmp_path):
    write_idx_set(tmp_path, n_train=8, n_test=6)  # train labels 0..3
    (tmp_path / "test-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 1, 2, 3, 7, 1], np.uint8)))
    with pytest.raises(DataError) as err:
        load_dataset("idx", path=tmp_path)
    assert (
        f"{tmp_path / 'test-labels-idx1-ubyte'} holds label 7 at index 4, but the training labels know classes 0..3"
    ) in str(err.value)


def test_nan_pixels_in_an_idx_file_are_refused(tmp_path):
    write_idx_set(tmp_path)
    images = np.zeros((5, 4, 4), np.float32)
    images[2, 1, 3] = np.nan
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images, 0x0D)))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz holds float32 values; image files must hold"):
        load_dataset("idx", path=tmp_path)


def test_nan_inf_and_stray_labels_in_your_own_arrays_are_named():
    x, y = torch.rand(5, 1, 2, 3), torch.tensor([0, 1, 0, 1, 1])
    Dataset("mine", x, y, x, y, 2, ("a", "b"))
    for value in (float("nan"), float("inf"), float("-inf")):
        bad = x.clone()
        bad[3, 0, 1, 2] = value
        with pytest.raises(DataError, match=rf"mine: train_x\[3\] holds {value} at \(0, 1, 2\) \(1 non-finite"):
            Dataset("mine", bad, y, x, y, 2, ("a", "b"))
    with pytest.raises(DataError, match=r"mine: test_y\[2\] = 5 is not one of the 2 classes 0..1 \(2 labels"):
        Dataset("mine", x, y, x, torch.tensor([0, 1, 5, 1, -1]), 2, ("a", "b"))


def test_ffclassifier_names_a_nan_or_inf_feature_by_row_and_column():
    X = np.random.default_rng(0).random((20, 4))
    y = np.arange(20) % 2
    bad = X.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"Input X contains NaN at row 7, column 2 \(1 non-finite value in all\)"):
        FFClassifier(hidden=8, epochs=1).fit(bad, y)
    fitted = FFClassifier(hidden=8, epochs=1).fit(X, y)
    bad[7, 2], bad[9, 0] = np.inf, -np.inf
    with pytest.raises(ValueError, match=r"Input X contains infinity \(inf\) at row 7, column 2 \(2 non-finite"):
        fitted.predict(bad)


def test_mixed_image_sizes_are_named_by_file(tmp_path, capsys):
    make_folder(tmp_path, ("a", "b"))
    save_image(tmp_path / "train" / "b" / "0001.png", np.zeros((5, 6, 3), np.uint8))
    assert main(["data", "verify", "image-folder", "--path", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL ") and "differ in size" in out and "train/b/0001.png is 6x5" in out
    with pytest.raises(DataError, match=r"train/b/0001\.png is 6x5 \(1 of 8 images differ"):
        load_dataset("image-folder", path=tmp_path, progress=False)
