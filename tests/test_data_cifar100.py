"""CIFAR-100: the official python archive (train, test, meta pickles in a tar.gz), its fine labels and class
names, the md5-checked download (from a local HTTP server) and the checks that refuse damaged or hostile files.

Everything runs on tiny copies written in the official format; no CIFAR-100 copy exists on these machines.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from localhttp import serve
from test_data_cifar import py2_pickle

import fflab.data.registry as registry
from fflab.cli import main
from fflab.data import download_dataset, get_spec, load_dataset, verify_dataset
from fflab.data.cifar100 import parse_meta, parse_split
from fflab.errors import DataError

CLASSES = get_spec("cifar100").class_names
REFUSED = "http://127.0.0.1:1/"  # nothing listens on port 1


def split(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "batch_label": f"split {seed}",
        "fine_labels": [int(v) for v in rng.integers(0, 100, n)],
        "coarse_labels": [int(v) for v in rng.integers(0, 20, n)],
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        "filenames": [f"img_{seed}_{i}.png" for i in range(n)],
    }


def write_folder(folder: Path, n_train: int = 12, n_test: int = 5, names=CLASSES) -> dict[str, dict]:
    """An extracted official folder (cifar-100-python/: train, test, meta) of tiny splits; returns them."""
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": split(n_train, 0), "test": split(n_test, 1)}
    for name, content in splits.items():
        (folder / name).write_bytes(py2_pickle(content))
    coarse = [f"superclass_{i}" for i in range(20)]
    (folder / "meta").write_bytes(py2_pickle({"fine_label_names": list(names), "coarse_label_names": coarse}))
    return splits


def write_archive(dest: Path, **options) -> dict[str, dict]:
    """A tiny archive laid out as the official cifar-100-python.tar.gz at `dest`."""
    staging = dest.parent / "staging"
    splits = write_folder(staging / "cifar-100-python", **options)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(staging / "cifar-100-python", arcname="cifar-100-python")
    for path in (staging / "cifar-100-python").iterdir():
        path.unlink()
    (staging / "cifar-100-python").rmdir()
    staging.rmdir()
    return splits


def expected(content: dict) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(content["data"].reshape(-1, 3, 32, 32) / 255).float()
    return x, torch.tensor(content["fine_labels"])


def test_registry_entry() -> None:
    spec = get_spec("CIFAR_100".replace("_", ""))
    assert spec.name == "cifar100" and spec.kind == "download" and spec.reader == "cifar100"
    [file] = spec.files
    assert file.name == "cifar-100-python.tar.gz" and file.md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert len(CLASSES) == len(set(CLASSES)) == 100 and list(CLASSES) == sorted(CLASSES)
    assert CLASSES[:3] == ("apple", "aquarium_fish", "baby") and CLASSES[-1] == "worm"


@pytest.mark.parametrize("layout", ["archive", "folder"])
def test_official_files_load_exactly(tmp_path: Path, layout: str) -> None:
    if layout == "archive":
        splits = write_archive(tmp_path / "cifar100" / "cifar-100-python.tar.gz")
    else:
        splits = write_folder(tmp_path / "cifar100" / "cifar-100-python")
    data = load_dataset("cifar100", data_dir=tmp_path, download=False, progress=False)
    assert data.train_x.shape == (12, 3, 32, 32) and data.test_x.shape == (5, 3, 32, 32)
    assert data.num_classes == 100 and data.class_names == CLASSES
    for x, y, content in ((data.train_x, data.train_y, splits["train"]), (data.test_x, data.test_y, splits["test"])):
        want_x, want_y = expected(content)
        assert torch.equal(x, want_x) and torch.equal(y, want_y)  # the fine labels, not the coarse ones
    row = splits["train"]["data"][3]
    assert data.train_x[3, 1, 2, 0] * 255 == row[1024 + 64]  # G plane, y=2, x=0
    checks = verify_dataset("cifar100", tmp_path)
    assert all(c.ok for c in checks) and len(checks) == 4, checks
    assert "official python" in checks[0].detail
    assert "uint8 [12, 3072], 12 fine labels in 0..99" in checks[1].detail
    assert "100 fine class names (the official names)" in checks[3].detail


def test_class_names_come_from_the_meta_file(tmp_path: Path) -> None:
    names = [f"class {i}" for i in range(100)]
    write_folder(tmp_path / "cifar100" / "cifar-100-python", names=names)
    data = load_dataset("cifar100", data_dir=tmp_path, download=False, progress=False)
    assert data.class_names == tuple(names)
    assert "not the official names" in verify_dataset("cifar100", tmp_path)[3].detail


def good_split(n: int = 4) -> dict:
    return {b"data": np.zeros((n, 3072), np.uint8), b"fine_labels": [1] * n, b"coarse_labels": [0] * n}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda: pickle.dumps(good_split(), 4)[:-100], "corrupt or truncated pickle"),
        (lambda: pickle.dumps({**good_split(), b"fine_labels": [1, 2, 100, 3]}, 4), "fine label 100 at index 2"),
        (lambda: pickle.dumps({b"data": good_split()[b"data"], b"labels": [1] * 4}, 4), "no b'data' and b'fine_la"),
        (lambda: pickle.dumps({**good_split(), b"data": np.zeros((4, 3072), np.int64)}, 4), "int64"),
        (lambda: pickle.dumps({**good_split(), b"fine_labels": [1, 2]}, 4), "expected 4 integers"),
        (lambda: pickle.dumps([1, 2], 4), "pickled list"),
    ],
)
def test_damaged_splits_are_rejected(content, message: str) -> None:
    with pytest.raises(DataError, match=message) as err:
        parse_split(content(), "/x/train")
    assert "/x/train" in str(err.value)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (list(CLASSES[:99]), "99 entries; expected a list of 100"),
        ([*CLASSES[:99], "apple"], "names the fine class 'apple' more than once"),
        ([*CLASSES[:99], b" "], "fine class name 99 is ' '"),
    ],
)
def test_damaged_meta_is_rejected(names, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_meta(pickle.dumps({b"fine_label_names": names}, 4), "/x/meta")


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_hostile_or_missing_members_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar100" / "cifar-100-python"
    write_folder(folder)
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": Evil(marker)}))
    with pytest.raises(DataError) as err:
        load_dataset("cifar100", data_dir=tmp_path, download=False, progress=False)
    message = str(err.value)
    assert "not a CIFAR-100 file" in message and "system" in message and "refused" in message
    assert "1 of 3 files" in message and "`fflab data download cifar100`" in message and not marker.exists()
    assert [c.ok for c in verify_dataset("cifar100", tmp_path)] == [True, True, True, False]
    archive = tmp_path / "other" / "cifar100" / "cifar-100-python.tar.gz"
    write_archive(archive)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=f"{archive} is a corrupt or truncated archive"):
        load_dataset("cifar100", data_dir=tmp_path / "other", download=False, progress=False)


def test_missing_data_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("cifar100", data_dir=tmp_path, download=False)
    folder = tmp_path / "cifar100"
    for part in (f"{folder}/cifar-100-python/", f"{folder}/cifar-100-python.tar.gz", "fflab data download cifar100"):
        assert part in str(err.value)
    [check] = verify_dataset("cifar100", tmp_path)
    assert not check.ok


@pytest.fixture
def served_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, dict]]:
    """A tiny archive to serve, with the registry's md5 patched to its own and no official mirror (a failing
    test never reaches for the internet)."""
    served = tmp_path / "served"
    splits = write_archive(served / "cifar-100-python.tar.gz")
    md5 = hashlib.md5((served / "cifar-100-python.tar.gz").read_bytes()).hexdigest()
    spec = get_spec("cifar100")
    patched = dataclasses.replace(spec, files=(dataclasses.replace(spec.files[0], md5=md5),), mirrors=(REFUSED,))
    monkeypatch.setitem(registry._REGISTRY, "cifar100", patched)
    return served, splits


def test_download_checks_md5_then_loads(served_archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served, splits = served_archive
    with serve(served) as url:
        [path] = download_dataset("cifar100", tmp_path / "data", mirrors=[url], progress=False)
        assert path == tmp_path / "data" / "cifar100" / "cifar-100-python.tar.gz"
        assert path.read_bytes() == (served / "cifar-100-python.tar.gz").read_bytes()
        [again] = download_dataset("cifar100", tmp_path / "data", mirrors=[REFUSED], progress=False)
        assert again == path  # already there: nothing fetched
        monkeypatch.setenv("FFLAB_MIRROR", url)  # a load with nothing on disk downloads too
        data = load_dataset("cifar100", data_dir=tmp_path / "fresh", progress=False)
    assert torch.equal(data.test_y, expected(splits["test"])[1])
    assert "md5 matches the official archive" in verify_dataset("cifar100", tmp_path / "fresh")[0].detail


def test_corrupt_download_is_rejected_and_leaves_nothing(served_archive, tmp_path: Path) -> None:
    served, _ = served_archive
    archive = served / "cifar-100-python.tar.gz"
    damaged = bytearray(archive.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    archive.write_bytes(bytes(damaged))
    with serve(served) as url, pytest.raises(DataError, match="md5 of the downloaded file is"):
        download_dataset("cifar100", tmp_path / "data", mirrors=[url], progress=False)
    assert list((tmp_path / "data" / "cifar100").iterdir()) == []


def test_cli_lists_and_verifies_cifar100(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    assert "  cifar100 " in capsys.readouterr().out
    assert main(["data", "verify", "cifar100", "--data-dir", str(tmp_path)]) == 1
    write_archive(tmp_path / "cifar100" / "cifar-100-python.tar.gz")
    assert main(["data", "verify", "cifar100", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("ok  ") == 4
