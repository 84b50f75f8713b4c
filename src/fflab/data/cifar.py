"""CIFAR-10: the official python-pickle batches, read safely, and the finder for the layouts fflab accepts.

`<data dir>/cifar10/` may hold the official archive (cifar-10-python.tar.gz), its extracted
cifar-10-batches-py/ folder, an image folder (train/ and test/, directly or one folder down) or a tar of
one; `<data dir>/cifar10-jpeg.tar` is accepted too. The official pickles are preferred. Batches are
unpickled by an Unpickler that can only build numpy arrays, so a hostile file cannot run code, and every
batch is checked (uint8 [n, 3072] pixels, n labels in 0..9) before use.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from tqdm import tqdm

from fflab.data.dataset import Dataset
from fflab.data.download import download_missing
from fflab.data.imagefolder import (
    ImageArrays,
    describe_splits,
    find_split_root,
    read_image_folder,
    tar_key,
    uint8_dataset,
    unpack_image_tar,
)
from fflab.data.paths import dataset_folder, resolve_data_dir
from fflab.data.registry import CIFAR10_CLASSES, DatasetSpec
from fflab.errors import DataError

ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_RAW = "cifar-10-python.tar"  # the same archive, decompressed
BATCH_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
BATCHES = TRAIN_BATCHES + TEST_BATCHES
IMAGE_TAR = "cifar10-jpeg.tar"  # accepted at the top of the data directory
ROW = 3 * 32 * 32  # one image: the R plane, then G, then B, each 32x32 row-major

Layout = Literal["pickle-folder", "pickle-archive", "image-folder", "image-tar"]


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The only globals a pickled numpy array needs, under their numpy 1.x and 2.x module names."""
    try:
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
        from numpy.core.numeric import _frombuffer
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = _reconstruct  # pickle protocols 0-4
        allowed[(f"{package}.numeric", "_frombuffer")] = _frombuffer  # protocol 5
        allowed[(f"{package}.multiarray", "ndarray")] = np.ndarray
        allowed[(f"{package}.multiarray", "dtype")] = np.dtype
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only numpy's array-building globals: anything else (os.system, eval,
    builtins...) is refused before it can be called."""

    allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def unpickle(raw: bytes, where: str, what: str = "CIFAR-10 batch") -> object:
    """Unpickle bytes written by Python 2 or 3 (byte strings stay bytes), allowing numpy arrays only (`what`
    names the expected file in errors)."""
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as err:
        if "refused global" in str(err):
            raise DataError(
                f"{where} is not a {what}: its pickle asks for {str(err).removeprefix('refused global ')}, "
                f"and a {what} holds only numpy arrays and lists. fflab refused to unpickle it (it could run code)."
            ) from None
        raise DataError(f"{where} is a corrupt or truncated pickle ({err}). Replace it with an intact copy.") from None
    except Exception as err:  # any other failure of hostile or damaged bytes is a damaged file, not a bug
        raise DataError(
            f"{where} is a corrupt or truncated pickle ({type(err).__name__}: {err}). Replace it with an intact copy."
        ) from None


def entry(content: dict, key: str):
    """A pickled dict's entry under its Python 2 byte-string key (the official files) or a str key (Python 3)."""
    return content.get(key.encode(), content.get(key))


def images_and_labels(
    content: dict, where: str, *, dataset: str, holds: str, label_key: str, label: str, classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Check a CIFAR pickle's b"data" (uint8 [n, 3072]) and its n labels under `label_key` (0..classes-1); return
    (pixels uint8 [n, 3, 32, 32], labels int64 [n]). Errors name the file (`where`), what it should be (`holds`,
    e.g. "batch") and the labels (`label`, e.g. "fine label") of the `dataset`."""
    data, labels = entry(content, "data"), entry(content, label_key)
    if data is None or labels is None:
        keys = ", ".join(repr(k) for k in content) or "none"
        raise DataError(
            f"{where} has no b'data' and b'{label_key}' entries (its keys: {keys}); not a {dataset} {holds}."
        )
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: b'data' is {found}; expected uint8 [n, {ROW}] (n images of 3x32x32).")
    if len(data) == 0:
        raise DataError(f"{where} holds no images.")
    try:
        labels = np.asarray(labels)
    except (ValueError, TypeError) as err:
        raise DataError(f"{where}: b'{label_key}' is not a list of integers ({err}).") from None
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
        raise DataError(
            f"{where}: b'{label_key}' is {labels.dtype} {labels.shape}; expected {len(data)} integers, one per image."
        )
    if labels.min() < 0 or labels.max() >= classes:
        index = int(np.argmax((labels < 0) | (labels >= classes)))
        raise DataError(
            f"{where} holds {label} {labels[index]} at index {index}; {dataset} {label}s are 0..{classes - 1}."
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def parse_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Check one batch: a dict with b"data" uint8 [n, 3072] and b"labels" n ints in 0..9; return
    (pixels uint8 [n, 3, 32, 32], labels int64 [n]). `where` names the file in errors."""
    batch = unpickle(raw, where)
    if not isinstance(batch, dict):
        raise DataError(f"{where} holds a pickled {type(batch).__name__}; a CIFAR-10 batch is a dict.")
    return images_and_labels(
        batch, where, dataset="CIFAR-10", holds="batch", label_key="labels", label="label", classes=len(CIFAR10_CLASSES)
    )


Batches = dict[str, tuple[np.ndarray, np.ndarray]]


def read_batch_folder(folder: Path) -> tuple[Batches, dict[str, str]]:
    """Read the batches of an extracted cifar-10-batches-py/ folder: (good batches, errors), both by name."""
    batches: Batches = {}
    errors: dict[str, str] = {}
    for name in BATCHES:
        path = folder / name
        try:
            raw = path.read_bytes()
        except OSError as err:
            errors[name] = f"Cannot read {path}: {err.strerror or err}."
            continue
        try:
            batches[name] = parse_batch(raw, str(path))
        except DataError as err:
            errors[name] = str(err)
    return batches, errors


def read_archive(path: Path, *, progress: bool = False) -> tuple[Batches, dict[str, str]]:
    """Read the batches straight from the official tar.gz, in one streaming pass: (good batches, errors).

    A damaged archive (bad gzip, truncated tar) raises DataError; a damaged batch is reported in `errors`.
    """
    batches: Batches = {}
    errors: dict[str, str] = {name: f"{path} holds no member {BATCH_FOLDER}/{name}" for name in BATCHES}
    try:
        with (
            tarfile.open(path, "r|*") as tar,
            tqdm(total=len(BATCHES), desc=path.name, unit="batch", disable=not progress) as bar,
        ):
            for member in tar:
                name = PurePosixPath(member.name).name
                if not member.isfile() or name not in errors or name in batches:
                    continue
                where = f"{path} (member {member.name})"
                raw = tar.extractfile(member).read()
                del errors[name]
                try:
                    batches[name] = parse_batch(raw, where)
                except DataError as err:
                    errors[name] = str(err)
                bar.update()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{path} is a corrupt or truncated archive ({err}). Expected the official {ARCHIVE} "
            "(md5 c58f30108f718f92721af3b95e74349a): delete it and download it again."
        ) from None
    return batches, errors


@dataclass(frozen=True)
class CifarSource:
    """Where a CIFAR-10 copy was found: `layout` and the folder or file that holds it."""

    layout: Layout
    path: Path

    def describe(self) -> str:
        return {
            "pickle-folder": "official python batches, extracted",
            "pickle-archive": "official python archive",
            "image-folder": "image folder (train/ and test/ of class folders)",
            "image-tar": "tar of an image folder, unpacked into the cache dir",
        }[self.layout]


def find_source(folder: Path, data_root: Path | None) -> CifarSource | None:
    """The CIFAR-10 copy to load from `folder` (`<data dir>/cifar10`, or a path given by the user), preferring
    the official pickles; `data_root`, when given, may hold `cifar10-jpeg.tar`. None if there is none."""
    batches = folder / BATCH_FOLDER
    archives = [folder / name for name in (ARCHIVE, ARCHIVE_RAW) if (folder / name).is_file()]
    if batches.is_dir() and (all((batches / name).is_file() for name in BATCHES) or not archives):
        return CifarSource("pickle-folder", batches)
    if archives:
        return CifarSource("pickle-archive", archives[0])
    root = find_split_root(folder)
    if root is not None:
        return CifarSource("image-folder", root)
    tars = sorted(p for p in folder.glob("*.tar") if p.is_file() and p.name != ARCHIVE_RAW) if folder.is_dir() else []
    if tars:
        return CifarSource("image-tar", tars[0])
    if data_root is not None and (data_root / IMAGE_TAR).is_file():
        return CifarSource("image-tar", data_root / IMAGE_TAR)
    return None


def layouts_message(folder: Path, data_root: Path | None) -> str:
    """What fflab looked for, in order, and how to get CIFAR-10 there."""
    lines = [
        "Data set 'cifar10': no CIFAR-10 data found. fflab looks for, in this order:",
        f"  - {folder}/{BATCH_FOLDER}/ (the official archive, extracted: data_batch_1..5, test_batch)",
        f"  - {folder}/{ARCHIVE} (the official archive, https://www.cs.toronto.edu/~kriz/{ARCHIVE})",
        f"  - {folder}/train/ and {folder}/test/, each holding one folder of .png/.jpg images per class "
        f"({', '.join(CIFAR10_CLASSES)}); they may also be one folder down, e.g. {folder}/cifar10-jpeg/train/",
        f"  - a tar of such an image folder: {folder}/*.tar"
        + (f" or {data_root}/{IMAGE_TAR}" if data_root is not None else ""),
        "To fix: run `fflab data download cifar10` (needs internet), or put one of these in place. To keep data "
        "elsewhere, set FFLAB_DATA to a folder holding cifar10/.",
    ]
    return "\n".join(lines)


def archive_md5_note(path: Path, md5: str | None) -> str:
    """Whether an archive is byte-identical to the official one (a repacked copy may still be sound)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() == md5:
        return "md5 matches the official archive"
    return f"md5 {digest.hexdigest()} is not the official {md5} (a repacked or damaged copy; batches checked below)"


def _read_pickles(source: CifarSource, progress: bool) -> tuple[Batches, dict[str, str]]:
    if source.layout == "pickle-archive":
        return read_archive(source.path, progress=progress)
    return read_batch_folder(source.path)


def _image_folder(source: CifarSource, progress: bool) -> ImageArrays:
    """Read an image-folder copy (unpacking a tar into the cache dir first); its classes must be CIFAR-10's."""
    if source.layout == "image-folder":
        return read_image_folder(source.path, classes=CIFAR10_CLASSES, name="cifar10", progress=progress)
    root = unpack_image_tar(source.path, progress=progress)
    key = tar_key(source.path)  # the unpacked copy changes only with the tar: no need to stat every image
    return read_image_folder(root, classes=CIFAR10_CLASSES, name="cifar10", progress=progress, content_key=key)


def _locate(
    spec: DatasetSpec, data_dir: str | os.PathLike | None, path: str | os.PathLike | None
) -> tuple[Path, Path | None]:
    """The cifar10 folder, and the data root that may hold cifar10-jpeg.tar (None when the user gave a path)."""
    folder = dataset_folder(spec, data_dir, path)
    data_root = None if path is not None and str(path) else resolve_data_dir(data_dir)
    return folder, data_root


def load_cifar10(
    spec: DatasetSpec,
    data_dir: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool = True,
) -> Dataset:
    """Load CIFAR-10 from whichever accepted layout is there, downloading the official archive into
    `<data dir>/cifar10/` if none is and `download` is true."""
    folder, data_root = _locate(spec, data_dir, path)
    source = find_source(folder, data_root)
    if source is None:
        if not download:
            raise DataError(layouts_message(folder, data_root))
        try:
            [archive] = download_missing(spec, folder, progress=progress)
        except DataError as err:
            raise DataError(f"{err}\n\n{layouts_message(folder, data_root)}") from None
        source = CifarSource("pickle-archive", archive)
    if source.layout in ("image-folder", "image-tar"):
        images = _image_folder(source, progress)
        return uint8_dataset(spec.name, images.train_x, images.train_y, images.test_x, images.test_y, CIFAR10_CLASSES)
    batches, errors = _read_pickles(source, progress)
    if errors:
        details = "\n".join(f"  - {message}" for message in errors.values())
        raise DataError(
            f"Data set 'cifar10': {len(errors)} of {len(BATCHES)} batches in {source.path} failed verification:\n"
            f"{details}\nTo fix: delete the damaged copy and run `fflab data download cifar10`, or place the intact "
            f"official {ARCHIVE} (from {spec.mirrors[0]}) in {folder}/."
        )
    train = [batches[name] for name in TRAIN_BATCHES]
    test = [batches[name] for name in TEST_BATCHES]
    return uint8_dataset(
        spec.name,
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        np.concatenate([x for x, _ in test]),
        np.concatenate([y for _, y in test]),
        CIFAR10_CLASSES,
    )


def download_cifar10(
    spec: DatasetSpec,
    data_dir: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    mirrors: Sequence[str] | None = None,
) -> list[Path]:
    """Fetch the official archive into `<data dir>/cifar10/` unless the official batches are already there
    (the archive, or its extracted folder); return the path of what holds them. An image-folder copy does
    not count: `download` asks for the official data."""
    folder = dataset_folder(spec, data_dir, None)
    source = find_source(folder, None)
    if source is not None and source.layout in ("pickle-folder", "pickle-archive"):
        return [source.path]
    return download_missing(spec, folder, progress=progress, mirrors=mirrors)


def describe_cifar10(
    spec: DatasetSpec, data_dir: str | os.PathLike | None = None, path: str | os.PathLike | None = None
) -> list[tuple[Path, bool, str]]:
    """Check the CIFAR-10 copy on disk for `verify_dataset`: (path, ok, detail) for the layout, then per batch
    (official pickles) or per split (image folders). Reads exactly what a load would read."""
    folder, data_root = _locate(spec, data_dir, path)
    source = find_source(folder, data_root)
    if source is None:
        return [(folder, False, layouts_message(folder, data_root))]
    layout = f"layout: {source.describe()}"
    if source.layout in ("image-folder", "image-tar"):
        try:
            return [(source.path, True, layout), *describe_splits(_image_folder(source, progress=False))]
        except DataError as err:
            return [(source.path, False, f"{layout}; {err}")]
    if source.layout == "pickle-archive":
        layout += f" ({archive_md5_note(source.path, spec.files[0].md5)})"
    try:
        batches, errors = _read_pickles(source, progress=False)
    except DataError as err:
        return [(source.path, False, f"{layout}; {err}")]
    checks = [(source.path, True, layout)]
    for name in BATCHES:
        where = source.path / name if source.layout == "pickle-folder" else source.path
        if name in errors:
            checks.append((where, False, errors[name]))
        else:
            x, y = batches[name]
            member = f"member {BATCH_FOLDER}/{name}: " if source.layout == "pickle-archive" else ""
            checks.append((where, True, f"{member}uint8 [{len(x)}, {ROW}], {len(y)} labels in 0..9"))
    return checks
