"""Registry, data directory, named/embedded/folder data sets and on-load verification."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fflab.data import Dataset, available_datasets, get_spec, load_dataset, resolve_data_dir, verify_dataset
from fflab.errors import DataError


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX payload."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@pytest.fixture
def data_root(real_data) -> Path:
    """The folder of real data sets holding mnist/ (CI: FFLAB_DATA=../shared/datasets)."""
    return real_data("mnist")


def test_registry_lists_all_sets_with_checksums_and_mirrors() -> None:
    specs = {spec.name: spec for spec in available_datasets()}
    assert list(specs) == [
        "digits",
        "mnist",
        "fashion-mnist",
        "kmnist",
        "cifar10",
        "cifar100",
        "idx",
        "image-folder",
        "seq-mnist",
        "moving-mnist",
    ]
    assert specs["seq-mnist"].kind == specs["moving-mnist"].kind == "derived"
    assert specs["seq-mnist"].base == specs["moving-mnist"].base == "mnist"
    for name in ("mnist", "fashion-mnist", "kmnist"):
        spec = specs[name]
        assert spec.kind == "download" and spec.mirrors and len(spec.class_names) == 10
        assert [f.name for f in spec.files] == [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ]
        assert all(f.md5 and len(f.md5) == 32 for f in spec.files)
    assert all(f.sha256 for f in specs["mnist"].files + specs["fashion-mnist"].files)
    assert specs["kmnist"].class_names[:3] == ("o", "ki", "su")
    assert specs["fashion-mnist"].class_names[0] == "T-shirt/top"


def test_get_spec_normalises_and_rejects_unknown_names() -> None:
    assert get_spec(" Fashion_MNIST ").name == "fashion-mnist"
    with pytest.raises(
        DataError, match=r"Unknown data set 'cifar'.*digits, mnist, fashion-mnist, kmnist, cifar10, cifar100, idx"
    ):
        get_spec("cifar")


def test_resolve_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FFLAB_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("FFLAB_DATA")
    assert resolve_data_dir() == tmp_path / "xdg" / "fflab"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "fflab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "fflab"
    assert resolve_data_dir("~/data") == tmp_path / "home" / "data"


def test_digits_loads_split_deterministically() -> None:
    data = load_dataset("digits")
    assert data.train_x.shape == (1437, 1, 8, 8) and data.test_x.shape == (360, 1, 8, 8)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert 0.0 == data.train_x.min() and data.train_x.max() == 1.0
    assert data.input_shape == (1, 8, 8) and data.input_dim == 64 and data.num_classes == 10
    assert torch.bincount(data.test_y).tolist() == pytest.approx([36] * 10, abs=1)  # stratified
    again = load_dataset("digits")
    assert torch.equal(data.train_x, again.train_x) and torch.equal(data.test_y, again.test_y)
    [check] = verify_dataset("digits")
    assert check.ok and "scikit-learn" in check.detail


def write_idx_set(folder: Path, n_train: int = 5, n_test: int = 3, size: int = 4, test_prefix: str = "test") -> None:
    """A small MNIST-format folder: gzip train files, raw test files named test-* (or t10k-*)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, prefix, count in (("train", "train", n_train), ("test", test_prefix, n_test)):
        images = rng.integers(0, 256, (count, size, size), dtype=np.uint8)
        labels = (np.arange(count) % 4).astype(np.uint8)
        if split == "train":
            (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
            (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
        else:
            (folder / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(images))
            (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))


def test_idx_folder_loads(tmp_path: Path) -> None:
    write_idx_set(tmp_path)
    data = load_dataset("idx", path=tmp_path)
    assert data.train_x.shape == (5, 1, 4, 4) and data.test_x.shape == (3, 1, 4, 4)
    assert data.num_classes == 4 and data.class_names == ("0", "1", "2", "3")
    raw = np.frombuffer(gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())[16:], np.uint8)
    torch.testing.assert_close(data.train_x.flatten(), torch.from_numpy(raw / 255).float())
    assert all(check.ok and "no official checksum" in check.detail for check in verify_dataset("idx", path=tmp_path))


def test_idx_folder_needs_a_path() -> None:
    with pytest.raises(DataError, match="no path was given.*train-images-idx3-ubyte"):
        load_dataset("idx")


def test_idx_folder_count_mismatch_names_both_files(tmp_path: Path) -> None:
    write_idx_set(tmp_path, test_prefix="t10k")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(DataError) as err:
        load_dataset("idx", path=tmp_path)
    message = str(err.value)
    assert "t10k-images-idx3-ubyte holds 3 images" in message and "t10k-labels-idx1-ubyte holds 2 labels" in message
    assert "1 of 4 files" in message and "To fix" in message


def test_idx_folder_train_and_test_sizes_must_agree(tmp_path: Path) -> None:
    write_idx_set(tmp_path)
    (tmp_path / "test-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((3, 5, 5), np.uint8)))
    with pytest.raises(DataError, match="holds 5x5 images but .* holds 4x4"):
        load_dataset("idx", path=tmp_path)


def test_idx_folder_missing_files_are_listed(tmp_path: Path) -> None:
    write_idx_set(tmp_path)
    (tmp_path / "test-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("idx", path=tmp_path)
    message = str(err.value)
    assert "1 of 4 files missing" in message and str(tmp_path) in message
    assert "t10k-labels-idx1-ubyte.gz (or uncompressed t10k-labels-idx1-ubyte)" in message


def test_missing_named_set_without_download_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("kmnist", data_dir=tmp_path, download=False)
    message = str(err.value)
    assert f"{tmp_path / 'kmnist'}/" in message and "4 of 4 files missing" in message
    assert "train-images-idx3-ubyte.gz" in message and "`fflab data download kmnist`" in message


def test_dataset_validates_its_tensors() -> None:
    x, y = torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(DataError, match="train_x must be float32"):
        Dataset("t", x.double(), y, x, y, 1, ("a",))
    with pytest.raises(DataError, match="test_y must be int64 \\[N\\] with N = 4"):
        Dataset("t", x, y, x, y[:3], 1, ("a",))
    with pytest.raises(DataError, match="2 class names for 1 classes"):
        Dataset("t", x, y, x, y, 1, ("a", "b"))


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_data_loads_and_matches_official_hashes(real_data, name: str) -> None:
    data_root = real_data(name)
    data = load_dataset(name, data_dir=data_root, download=False)
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_x.dtype == torch.float32 and data.test_y.dtype == torch.int64
    assert data.train_x.min() == 0.0 and data.train_x.max() == 1.0
    assert set(data.train_y.unique().tolist()) == set(range(10)) and data.num_classes == 10
    checks = verify_dataset(name, data_root)
    assert len(checks) == 4 and all(c.ok and "SHA-256 matches" in c.detail for c in checks), checks


def _copy_of_mnist(data_root: Path, target: Path) -> Path:
    """tmp data root whose mnist/ links to the real files; the caller replaces the ones it damages."""
    folder = target / "mnist"
    folder.mkdir(parents=True)
    for source in (data_root / "mnist").iterdir():
        (folder / source.name).symlink_to(source)
    return folder


def test_flipped_payload_byte_fails_hash_check(data_root: Path, tmp_path: Path) -> None:
    folder = _copy_of_mnist(data_root, tmp_path)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(labels.read_bytes()))
    payload[100] = (payload[100] + 1) % 10  # still a valid label: only the checksum can notice
    labels.unlink()
    labels.write_bytes(gzip.compress(bytes(payload)))
    checks = verify_dataset("mnist", tmp_path)
    assert [c.ok for c in checks] == [True, True, True, False]
    assert "SHA-256" in checks[3].detail and "ff7bcfd416de" in checks[3].detail
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    message = str(err.value)
    assert str(labels) in message and "`fflab data download mnist`" in message


def test_uncompressed_official_files_are_accepted(data_root: Path, tmp_path: Path) -> None:
    folder = _copy_of_mnist(data_root, tmp_path)
    gz = folder / "t10k-labels-idx1-ubyte.gz"
    (folder / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    checks = verify_dataset("mnist", tmp_path)
    assert all(c.ok for c in checks) and checks[3].path.name == "t10k-labels-idx1-ubyte"


def test_named_set_shape_is_checked(data_root: Path, tmp_path: Path) -> None:
    folder = _copy_of_mnist(data_root, tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(9999, np.uint8)))
    with pytest.raises(DataError, match=r"SHA-256 .* expected the official"):
        load_dataset("mnist", data_dir=tmp_path, download=False)
    checks = verify_dataset("kmnist", path=folder)  # no official hashes: the shape check must catch it
    assert not checks[3].ok and "shape (9999,); expected (10000,)" in checks[3].detail
