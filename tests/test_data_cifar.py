"""CIFAR-10 (official pickle batches, image folders, tars of them) and the generic 'image-folder' data set.

Everything runs on tiny synthetic copies written into tmp dirs; the one real-data test needs FFLAB_DATA (a
folder holding cifar10-jpeg.tar or cifar10/) and is marked slow (it unpacks and decodes 60,000 JPEGs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import shutil
import stat
import struct
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from localhttp import serve
from PIL import Image
from repo import config_path

import fflab.data.imagefolder as imagefolder
import fflab.data.registry as registry
from fflab.cli import main
from fflab.config import load_config
from fflab.data import download_dataset, get_spec, load_dataset, verify_dataset
from fflab.data.cifar import parse_batch
from fflab.errors import DataError
from fflab.models import build_model
from fflab.training.evaluate import evaluate
from fflab.training.trainer import FFTrainer

CLASSES = get_spec("cifar10").class_names
REFUSED = "http://127.0.0.1:1/"  # nothing listens on port 1: connection refused at once


# --- the official format -----------------------------------------------------------------------------------


class Py2Pickler(pickle._Pickler):
    """Pickles str and bytes as Python 2 byte strings, as the official batches were written (cPickle, py2)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        size = len(data)
        self.write(
            (pickle.SHORT_BINSTRING + bytes([size]) if size < 256 else pickle.BINSTRING + struct.pack("<i", size))
            + data
        )
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    # numpy 1.x, which wrote the official files, named the module numpy.core.multiarray
    return buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "batch_label": f"batch {seed}",
        "labels": [int(v) for v in rng.integers(0, 10, n)],
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        "filenames": [f"img_{seed}_{i}.png" for i in range(n)],
    }


BATCH_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_batches(folder: Path, n: int = 10) -> dict[str, dict]:
    """An extracted official folder (cifar-10-batches-py/) of tiny batches; returns them by name."""
    folder.mkdir(parents=True, exist_ok=True)
    batches = {name: batch(n, seed) for seed, name in enumerate(BATCH_NAMES)}
    for name, content in batches.items():
        (folder / name).write_bytes(py2_pickle(content))
    (folder / "batches.meta").write_bytes(py2_pickle({"label_names": list(CLASSES), "num_vis": 3072}))
    return batches


def write_archive(dest: Path, n: int = 10) -> dict[str, dict]:
    """A tiny archive laid out as the official cifar-10-python.tar.gz at `dest`."""
    staging = dest.parent / "staging"
    batches = write_batches(staging / "cifar-10-batches-py", n)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    for path in sorted((staging / "cifar-10-batches-py").iterdir()):
        path.unlink()
    (staging / "cifar-10-batches-py").rmdir()
    staging.rmdir()
    return batches


def expected(batches: dict[str, dict], names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    x = np.concatenate([batches[name]["data"] for name in names])
    y = np.concatenate([batches[name]["labels"] for name in names])
    return torch.from_numpy(x.reshape(-1, 3, 32, 32) / 255).float(), torch.from_numpy(y).long()


@pytest.mark.parametrize("layout", ["archive", "folder"])
def test_official_batches_load_exactly(tmp_path: Path, layout: str) -> None:
    if layout == "archive":
        batches = write_archive(tmp_path / "cifar10" / "cifar-10-python.tar.gz")
    else:
        batches = write_batches(tmp_path / "cifar10" / "cifar-10-batches-py")
    data = load_dataset("cifar10", data_dir=tmp_path, download=False, progress=False)
    train_x, train_y = expected(batches, BATCH_NAMES[:5])
    test_x, test_y = expected(batches, BATCH_NAMES[5:])
    assert data.train_x.shape == (50, 3, 32, 32) and data.test_x.shape == (10, 3, 32, 32)
    assert data.class_names == CLASSES and data.num_classes == 10
    assert torch.equal(data.train_x, train_x) and torch.equal(data.test_x, test_x)
    assert torch.equal(data.train_y, train_y) and torch.equal(data.test_y, test_y)
    # Channel order: a row is the R plane, then G, then B, each 32x32 row-major.
    row = batches["data_batch_1"]["data"][3]
    assert data.train_x[3, 0, 0, 1] * 255 == row[1]  # R, y=0, x=1
    assert data.train_x[3, 1, 2, 0] * 255 == row[1024 + 64]  # G, y=2, x=0
    assert data.train_x[3, 2, 31, 31] * 255 == row[3071]  # B, last pixel
    checks = verify_dataset("cifar10", tmp_path)
    assert all(c.ok for c in checks) and len(checks) == 7
    assert "official python" in checks[0].detail and "uint8 [10, 3072], 10 labels in 0..9" in checks[1].detail


def test_python3_pickles_load_too() -> None:
    content = {b"data": (np.arange(2 * 3072) % 251).astype(np.uint8).reshape(2, 3072), b"labels": [9, 0]}
    for protocol in (2, 4, 5):
        raw = pickle.dumps({"data" if protocol == 2 else b"data": content[b"data"], b"labels": [9, 0]}, protocol)
        if protocol == 2:  # Python 3 writes bytes at protocol 2 through _codecs.encode: refused, not run
            with pytest.raises(DataError, match="_codecs.encode"):
                parse_batch(raw, "p2")
            continue
        x, y = parse_batch(raw, f"protocol {protocol}")
        assert np.array_equal(x.reshape(2, -1), content[b"data"]) and y.tolist() == [9, 0]


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def good_batch(n: int = 4) -> dict:
    return {b"data": np.zeros((n, 3072), np.uint8), b"labels": [1] * n}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda: pickle.dumps(good_batch(), 4)[:-200], "corrupt or truncated pickle"),
        (lambda: pickle.dumps({**good_batch(), b"data": np.zeros((4, 3071), np.uint8)}, 4), r"uint8 \(4, 3071\)"),
        (lambda: pickle.dumps({**good_batch(), b"data": np.zeros((4, 3072), np.float32)}, 4), "float32"),
        (lambda: pickle.dumps({**good_batch(), b"labels": [1, 2, 10, 3]}, 4), "holds label 10 at index 2"),
        (lambda: pickle.dumps({**good_batch(), b"labels": [1, -1, 0, 3]}, 4), "holds label -1 at index 1"),
        (lambda: pickle.dumps({**good_batch(), b"labels": [1, 2]}, 4), "expected 4 integers"),
        (lambda: pickle.dumps({b"pixels": 1}, 4), "no b'data' and b'labels'"),
        (lambda: pickle.dumps([1, 2, 3], 4), "pickled list"),
        (lambda: b"", "corrupt or truncated pickle"),
    ],
)
def test_damaged_batches_are_rejected(content, message: str) -> None:
    with pytest.raises(DataError, match=message) as err:
        parse_batch(content(), "/x/data_batch_3")
    assert "/x/data_batch_3" in str(err.value)


def test_a_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_batches(folder)
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": Evil(marker), b"labels": [0]}))
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", data_dir=tmp_path, download=False, progress=False)
    message = str(err.value)
    assert f"{folder / 'data_batch_2'}" in message and "system" in message and "refused" in message
    assert "1 of 6 batches" in message and "`fflab data download cifar10`" in message
    assert not marker.exists()
    checks = verify_dataset("cifar10", tmp_path)
    assert [c.ok for c in checks] == [True, True, False, True, True, True, True] and not marker.exists()


def test_truncated_archive_and_missing_batch(tmp_path: Path) -> None:
    archive = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    write_archive(archive)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=f"{archive} is a corrupt or truncated archive"):
        load_dataset("cifar10", data_dir=tmp_path, download=False, progress=False)
    folder = tmp_path / "other" / "cifar10" / "cifar-10-batches-py"
    write_batches(folder)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match=r"1 of 6 batches(.|\n)*Cannot read .*test_batch"):
        load_dataset("cifar10", data_dir=tmp_path / "other", download=False, progress=False)


def test_missing_data_lists_every_accepted_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    message = str(err.value)
    folder = tmp_path / "cifar10"
    for layout in (
        f"{folder}/cifar-10-batches-py/",
        f"{folder}/cifar-10-python.tar.gz",
        f"{folder}/train/ and {folder}/test/",
        f"{folder}/cifar10-jpeg/train/",
        f"{folder}/*.tar",
        f"{tmp_path}/cifar10-jpeg.tar",
        "`fflab data download cifar10`",
    ):
        assert layout in message
    [check] = verify_dataset("cifar10", tmp_path)
    assert not check.ok and "cifar-10-python.tar.gz" in check.detail


# --- download ----------------------------------------------------------------------------------------------


@pytest.fixture
def served_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, dict]]:
    """A synthetic archive to serve, with the registry's md5 patched to its own (and no official mirror, so a
    failing test never reaches for the internet)."""
    served = tmp_path / "served"
    batches = write_archive(served / "cifar-10-python.tar.gz")
    md5 = hashlib.md5((served / "cifar-10-python.tar.gz").read_bytes()).hexdigest()
    spec = get_spec("cifar10")
    patched = dataclasses.replace(spec, files=(dataclasses.replace(spec.files[0], md5=md5),), mirrors=(REFUSED,))
    monkeypatch.setitem(registry._REGISTRY, "cifar10", patched)
    return served, batches


def test_download_verifies_md5_then_loads(served_archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served, batches = served_archive
    with serve(served) as url:
        [path] = download_dataset("cifar10", tmp_path / "data", mirrors=[url], progress=False)
        assert path == tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz"
        assert path.read_bytes() == (served / "cifar-10-python.tar.gz").read_bytes()
        write_batches(tmp_path / "extracted" / "cifar10" / "cifar-10-batches-py")  # already there: no download
        [path] = download_dataset("cifar10", tmp_path / "extracted", mirrors=[REFUSED], progress=False)
        assert path == tmp_path / "extracted" / "cifar10" / "cifar-10-batches-py"
        monkeypatch.setenv("FFLAB_MIRROR", url)  # a load with nothing on disk downloads too
        data = load_dataset("cifar10", data_dir=tmp_path / "fresh", progress=False)
    assert torch.equal(data.test_y, expected(batches, ["test_batch"])[1])
    assert sorted(p.name for p in (tmp_path / "fresh" / "cifar10").iterdir()) == ["cifar-10-python.tar.gz"]


def test_corrupt_download_is_rejected_and_leaves_nothing(
    served_archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, _ = served_archive
    archive = served / "cifar-10-python.tar.gz"
    damaged = bytearray(archive.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    archive.write_bytes(bytes(damaged))
    with serve(served) as url:
        with pytest.raises(DataError) as err:
            download_dataset("cifar10", tmp_path / "data", mirrors=[url], progress=False)
        assert "md5 of the downloaded file is" in str(err.value)
        monkeypatch.setenv("FFLAB_MIRROR", url)
        with pytest.raises(DataError) as err:  # a load that must download also says which layouts would do
            load_dataset("cifar10", data_dir=tmp_path / "data", progress=False)
    assert "md5 of the downloaded file is" in str(err.value) and "cifar10-jpeg.tar" in str(err.value)
    assert list((tmp_path / "data" / "cifar10").iterdir()) == []


# --- image folders -----------------------------------------------------------------------------------------


def save_image(path: Path, pixels: np.ndarray, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)


def make_folder(root: Path, classes: tuple[str, ...], per_class: int = 2, size: int = 4, seed: int = 0) -> dict:
    """PNG images (colour) in root/{train,test}/<class>/; returns {relative path: pixels [H, W, 3]}."""
    rng = np.random.default_rng(seed)
    images = {}
    for split in ("train", "test"):
        for cls in classes:
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                relative = f"{split}/{cls}/{i:04d}.png"
                save_image(root / relative, pixels)
                images[relative] = pixels
    return images


def test_image_folder_classes_pixels_and_formats(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    images = make_folder(root, ("dog", "cat", "bird"))
    save_image(root / "train" / "cat" / "extra.JPG", np.full((4, 4, 3), 200, np.uint8), "JPEG")
    save_image(root / "test" / "dog" / "extra.jpeg", np.full((4, 4, 3), 50, np.uint8), "JPEG")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    data = load_dataset("image-folder", path=root, progress=False)
    assert data.class_names == ("bird", "cat", "dog") and data.num_classes == 3
    assert data.train_x.shape == (7, 3, 4, 4) and data.test_x.shape == (7, 3, 4, 4)
    assert sorted(data.train_y.tolist()) == [0, 0, 1, 1, 1, 2, 2]
    assert data.train_y.tolist() != sorted(data.train_y.tolist())  # one fixed mixed order, not class by class
    for relative, label in (("train/bird/0000.png", 0), ("train/dog/0001.png", 2)):
        pixels = torch.from_numpy(images[relative]).permute(2, 0, 1).float() / 255
        (where,) = [i for i in range(7) if torch.equal(data.train_x[i], pixels)]
        assert data.train_y[where] == label
    (jpeg,) = [i for i in range(7) if (data.train_x[i] * 255 - 200).abs().max() <= 3]  # the JPEG, lossy
    assert data.train_y[jpeg] == 1
    again = load_dataset("image-folder", path=root, progress=False)
    assert torch.equal(again.train_x, data.train_x) and torch.equal(again.train_y, data.train_y)
    checks = verify_dataset("image-folder", path=root)
    assert all(c.ok for c in checks) and "7 images 3x4x4 in 3 classes" in checks[0].detail


def test_grey_sets_stay_grey_and_mixed_sets_become_rgb(tmp_path: Path) -> None:
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    for split in ("train", "test"):
        save_image(tmp_path / split / "a" / "0.png", grey)
        save_image(tmp_path / split / "b" / "0.png", 255 - grey)
    data = load_dataset("image-folder", path=tmp_path, progress=False)
    a = int((data.train_y == 0).nonzero())
    assert data.train_x.shape == (2, 1, 4, 4) and torch.equal(data.train_x[a, 0] * 255, torch.from_numpy(grey).float())
    save_image(tmp_path / "test" / "b" / "1.png", np.zeros((4, 4, 3), np.uint8))
    data = load_dataset("image-folder", path=tmp_path, progress=False)
    a = int((data.train_y == 0).nonzero())
    assert data.train_x.shape == (2, 3, 4, 4) and all(
        torch.equal(data.train_x[a, c] * 255, torch.from_numpy(grey).float()) for c in range(3)
    )


def test_cache_is_used_then_refreshed_when_a_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FFLAB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "set"
    make_folder(root, ("x", "y"))
    first = load_dataset("image-folder", path=root, progress=False)
    [cache] = (tmp_path / "cache" / "image-folder").iterdir()

    def broken(path: Path) -> np.ndarray:
        raise AssertionError(f"decoded {path} although the cache is current")

    with monkeypatch.context() as patch:
        patch.setattr(imagefolder, "_decode", broken)
        again = load_dataset("image-folder", path=root, progress=False)
    assert torch.equal(first.train_x, again.train_x) and torch.equal(first.test_y, again.test_y)
    changed = root / "train" / "y" / "0001.png"
    save_image(changed, np.zeros((4, 4, 3), np.uint8))
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    fresh = load_dataset("image-folder", path=root, progress=False)
    assert fresh.train_x[3].sum() == 0 and first.train_x[3].sum() > 0
    assert not cache.exists() and len(list((tmp_path / "cache" / "image-folder").iterdir())) == 1


def test_unreadable_images_are_listed_never_skipped(tmp_path: Path) -> None:
    make_folder(tmp_path, ("a", "b"))
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"not a png at all")
    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(jpeg, format="JPEG")
    (tmp_path / "test" / "b" / "cut.jpg").write_bytes(jpeg.getvalue()[:40])
    with pytest.raises(DataError) as err:
        load_dataset("image-folder", path=tmp_path, progress=False)
    message = str(err.value)
    assert "2 of 10 images" in message and "\n  - train/a/broken.png: cannot identify image file" in message
    assert "\n  - test/b/cut.jpg: " in message


def test_train_and_test_classes_must_match(tmp_path: Path) -> None:
    make_folder(tmp_path, ("a", "b", "c"))
    (tmp_path / "test" / "b").rename(tmp_path / "test" / "z")
    with pytest.raises(DataError, match="only in train: b; only in test: z"):
        load_dataset("image-folder", path=tmp_path, progress=False)


def test_image_sizes_must_match(tmp_path: Path) -> None:
    make_folder(tmp_path, ("a", "b"))
    save_image(tmp_path / "test" / "b" / "0001.png", np.zeros((5, 6, 3), np.uint8))
    with pytest.raises(DataError, match=r"train/./\d+\.png is 4x4 but test/b/0001.png is 6x5 \(1 of 8"):
        load_dataset("image-folder", path=tmp_path, progress=False)


def test_image_folder_needs_a_path_and_a_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no path was given.*train/<class>"):
        load_dataset("image-folder")
    with pytest.raises(DataError, match=f"{tmp_path} holds no image folder"):
        load_dataset("image-folder", path=tmp_path)
    with pytest.raises(DataError, match="nothing to download"):
        download_dataset("image-folder", tmp_path)


# --- cifar10 as an image folder or a tar of one ------------------------------------------------------------


def make_tar(tar_path: Path, staging: Path, classes: tuple[str, ...] = CLASSES) -> dict:
    images = make_folder(staging / "cifar10-jpeg", classes, per_class=1, size=2)
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "w") as tar:
        tar.add(staging / "cifar10-jpeg", arcname="cifar10-jpeg")
    return images


def test_cifar10_from_a_tar_is_unpacked_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, cache = tmp_path / "data", tmp_path / "cache"
    monkeypatch.setenv("FFLAB_CACHE", str(cache))
    images = make_tar(data_dir / "cifar10-jpeg.tar", tmp_path / "staging")
    data = load_dataset("cifar10", data_dir=data_dir, download=False, progress=True)
    bars = capsys.readouterr().err
    assert "unpacking cifar10-jpeg.tar" in bars and "decoding cifar10-jpeg" in bars and "20/20" in bars
    monkeypatch.setattr(imagefolder, "_decode", None)  # a cached load decodes nothing
    again = load_dataset("cifar10", data_dir=data_dir, download=False, progress=False)
    checks = verify_dataset("cifar10", data_dir)
    assert data.class_names == CLASSES and data.train_x.shape == (10, 3, 2, 2) and data.test_x.shape == (10, 3, 2, 2)
    assert sorted(data.train_y.tolist()) == list(range(10)) and torch.equal(data.test_x, again.test_x)
    truck = torch.from_numpy(images["test/truck/0000.png"]).permute(2, 0, 1).float() / 255
    assert torch.equal(data.test_x[int((data.test_y == 9).nonzero())], truck)
    assert [p.name for p in data_dir.iterdir()] == ["cifar10-jpeg.tar"]  # the data dir may be read-only
    [unpacked] = (cache / "unpacked").iterdir()
    assert (unpacked / "cifar10-jpeg" / "train" / "ship" / "0000.png").is_file()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(unpacked.stat().st_mode) == 0o777 & ~umask  # a shared cache stays readable by others
    assert all(c.ok for c in checks) and "tar of an image folder" in checks[0].detail
    assert "10 images 3x2x2 in 10 classes, 1..1 each" in checks[1].detail


def test_cifar10_image_folder_one_level_down_and_class_check(tmp_path: Path) -> None:
    make_folder(tmp_path / "cifar10" / "my-copy", CLASSES, per_class=1, size=2)
    data = load_dataset("cifar10", data_dir=tmp_path, download=False, progress=False)
    assert data.train_x.shape == (10, 3, 2, 2) and data.class_names == CLASSES
    (tmp_path / "cifar10" / "my-copy" / "train" / "cat").rename(tmp_path / "cifar10" / "my-copy" / "train" / "kitten")
    (tmp_path / "cifar10" / "my-copy" / "test" / "cat").rename(tmp_path / "cifar10" / "my-copy" / "test" / "kitten")
    with pytest.raises(DataError, match="must be exactly airplane, .*missing: cat; unexpected: kitten"):
        load_dataset("cifar10", data_dir=tmp_path, download=False, progress=False)


def test_official_pickles_are_preferred(tmp_path: Path) -> None:
    make_tar(tmp_path / "cifar10" / "pictures.tar", tmp_path / "staging")
    write_archive(tmp_path / "cifar10" / "cifar-10-python.tar.gz")
    data = load_dataset("cifar10", data_dir=tmp_path, download=False, progress=False)
    assert data.train_x.shape == (50, 3, 32, 32)
    assert main(["data", "verify", "cifar10", "--data-dir", str(tmp_path)]) == 0


def test_unsafe_tar_members_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FFLAB_CACHE", str(tmp_path / "cache"))
    tar_path = tmp_path / "data" / "cifar10" / "evil.tar"
    tar_path.parent.mkdir(parents=True)
    with tarfile.open(tar_path, "w") as tar:
        for name in ("../../escaped.png", "/abs.png"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
        link = tarfile.TarInfo("train/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", data_dir=tmp_path / "data", download=False, progress=False)
    message = str(err.value)
    assert "3 members fflab will not unpack" in message and "../../escaped.png" in message and "train/link" in message
    assert not (tmp_path / "escaped.png").exists() and list((tmp_path / "cache" / "unpacked").iterdir()) == []


def test_cli_lists_and_verifies_cifar10(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "  cifar10 " in out and "  image-folder " in out
    assert main(["data", "verify", "cifar10", "--data-dir", str(tmp_path)]) == 1
    assert "FAIL" in capsys.readouterr().out
    write_batches(tmp_path / "cifar10" / "cifar-10-batches-py")
    assert main(["data", "verify", "cifar10", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("ok  ") == 7 and "layout: official python batches, extracted" in out


# --- the real data set -------------------------------------------------------------------------------------


@pytest.fixture
def real_data_root(real_data) -> Path:
    return real_data("cifar10")


@pytest.mark.slow
def test_real_cifar10_and_a_short_conv_run(
    real_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FFLAB_CACHE", str(cache))
    try:
        start = time.perf_counter()
        data = load_dataset("cifar10", data_dir=real_data_root, download=False, progress=False)
        first = time.perf_counter() - start
        start = time.perf_counter()
        again = load_dataset("cifar10", data_dir=real_data_root, download=False, progress=False)
        second = time.perf_counter() - start
    finally:  # the unpacked tar is 60,000 files: removed here rather than by a later session's tmp clean-up
        shutil.rmtree(cache, ignore_errors=True)
    print(f"\ncifar10: first load {first:.1f} s, cached load {second:.2f} s")
    assert data.train_x.shape == (50000, 3, 32, 32) and data.test_x.shape == (10000, 3, 32, 32)
    assert data.num_classes == 10 and data.class_names == CLASSES
    assert torch.bincount(data.train_y).tolist() == [5000] * 10
    assert torch.bincount(data.test_y).tolist() == [1000] * 10
    assert 0.0 <= data.train_x.min() and data.train_x.max() <= 1.0
    assert torch.equal(data.test_x, again.test_x) and torch.equal(data.train_y, again.train_y)
    # A subset (the first N) holds every class, and a short channel-wise competitive conv run learns from it.
    assert torch.bincount(data.train_y[:10000]).min() >= 900
    cfg = load_config(
        config_path("cifar10-conv"),
        [
            "model.hidden=[20, 40]",
            "model.pool=[2, 2]",
            "model.groups=[1, 10]",
            "model.predict_layers=[1]",
            "train.epochs=2",
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg, 3072, 10, input_shape=(3, 32, 32))
    FFTrainer(model, cfg.train, progress=False).fit(data.train_x[:10000], data.train_y[:10000])
    accuracy = evaluate(model, data.test_x[:1000], data.test_y[:1000])["accuracy"]
    assert accuracy >= 0.3  # chance is 0.1
