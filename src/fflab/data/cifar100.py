"""CIFAR-100: the official python archive (cifar-100-python.tar.gz), read safely; the 100 fine labels.

`<data dir>/cifar100/` may hold the official archive (gzip-compressed or not) or its extracted
cifar-100-python/ folder (train, test, meta). Each split is one pickled dict: b"data" uint8 [n, 3072] (the R
plane, then G, then B, each 32x32 row-major), b"fine_labels" (0..99) and b"coarse_labels" (0..19, the 20
superclasses, not used). The class names are the meta file's b"fine_label_names". Pickles go through the
numpy-only Unpickler of fflab.data.cifar, so a hostile file cannot run code.

No CIFAR-100 copy exists on the machines fflab is benchmarked on: `fflab data download cifar100` fetches the
official archive (md5-checked) where there is internet.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from fflab.data.cifar import ROW, archive_md5_note, entry, images_and_labels, unpickle
from fflab.data.dataset import Dataset
from fflab.data.download import download_missing
from fflab.data.imagefolder import uint8_dataset
from fflab.data.paths import dataset_folder
from fflab.data.registry import CIFAR100_CLASSES, DatasetSpec
from fflab.errors import DataError

ARCHIVE = "cifar-100-python.tar.gz"
ARCHIVE_RAW = "cifar-100-python.tar"  # the same archive, decompressed
FOLDER = "cifar-100-python"
SPLITS = ("train", "test")
MEMBERS = (*SPLITS, "meta")
NUM_CLASSES = 100
WHAT = "CIFAR-100 file"


def _load_dict(raw: bytes, where: str, holds: str) -> dict:
    content = unpickle(raw, where, WHAT)
    if not isinstance(content, dict):
        raise DataError(f"{where} holds a pickled {type(content).__name__}; the CIFAR-100 {holds} is a dict.")
    return content


def parse_split(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Check one split (train or test): b"data" uint8 [n, 3072] and b"fine_labels" n ints in 0..99; return
    (pixels uint8 [n, 3, 32, 32], fine labels int64 [n]). `where` names the file in errors."""
    content = _load_dict(raw, where, "split")
    return images_and_labels(
        content,
        where,
        dataset="CIFAR-100",
        holds="split",
        label_key="fine_labels",
        label="fine label",
        classes=NUM_CLASSES,
    )


def parse_meta(raw: bytes, where: str) -> tuple[str, ...]:
    """The 100 fine class names of the meta file (b"fine_label_names"), in label order."""
    content = _load_dict(raw, where, "meta file")
    names = entry(content, "fine_label_names")
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        found = f"{len(names)} entries" if isinstance(names, list) else repr(type(names).__name__)
        raise DataError(f"{where}: b'fine_label_names' is {found}; expected a list of {NUM_CLASSES} class names.")
    decoded = []
    for i, name in enumerate(names):
        if isinstance(name, bytes):
            try:
                name = name.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{where}: fine class name {i} is not UTF-8 text ({name!r}).") from None
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{where}: fine class name {i} is {name!r}; expected a non-empty name.")
        decoded.append(name.strip())
    twice = sorted({name for name in decoded if decoded.count(name) > 1})
    if twice:
        raise DataError(f"{where} names the fine class {twice[0]!r} more than once.")
    return tuple(decoded)


@dataclass
class Contents:
    """What was read from a copy: the splits and class names that passed their checks, and each failure by member."""

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    class_names: tuple[str, ...] | None
    errors: dict[str, str]


def _parse(member: str, raw: bytes, where: str, contents: Contents) -> None:
    try:
        if member == "meta":
            contents.class_names = parse_meta(raw, where)
        else:
            contents.splits[member] = parse_split(raw, where)
    except DataError as err:
        contents.errors[member] = str(err)


def read_folder(folder: Path) -> Contents:
    """Read an extracted cifar-100-python/ folder (train, test, meta)."""
    contents = Contents({}, None, {})
    for member in MEMBERS:
        path = folder / member
        try:
            raw = path.read_bytes()
        except OSError as err:
            contents.errors[member] = f"Cannot read {path}: {err.strerror or err}."
            continue
        _parse(member, raw, str(path), contents)
    return contents


def read_archive(path: Path, md5: str | None = None) -> Contents:
    """Read train, test and meta straight from the official archive, in one streaming pass. A damaged archive
    (bad gzip, truncated tar) raises DataError; a damaged member is reported in the result's errors."""
    contents = Contents({}, None, {})
    missing = {member: f"{path} holds no member {FOLDER}/{member}" for member in MEMBERS}
    try:
        with tarfile.open(path, "r|*") as tar:
            for entry in tar:
                member = PurePosixPath(entry.name).name
                if not entry.isfile() or member not in missing:
                    continue
                del missing[member]
                _parse(member, tar.extractfile(entry).read(), f"{path} (member {entry.name})", contents)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{path} is a corrupt or truncated archive ({err}). Expected the official {ARCHIVE} "
            f"(md5 {md5}): delete it and download it again."
        ) from None
    contents.errors.update(missing)
    return contents


def find_copy(folder: Path) -> Path | None:
    """The extracted folder (if it holds all three files, or no archive is there), else the archive; None if neither."""
    extracted = folder / FOLDER
    archives = [folder / name for name in (ARCHIVE, ARCHIVE_RAW) if (folder / name).is_file()]
    if extracted.is_dir() and (all((extracted / m).is_file() for m in MEMBERS) or not archives):
        return extracted
    return archives[0] if archives else None


def _read(copy: Path, spec: DatasetSpec) -> Contents:
    return read_folder(copy) if copy.is_dir() else read_archive(copy, spec.files[0].md5)


def missing_message(folder: Path, spec: DatasetSpec) -> str:
    return "\n".join(
        [
            "Data set 'cifar100': no CIFAR-100 data found. fflab looks for, in this order:",
            f"  - {folder}/{FOLDER}/ (the official archive, extracted: train, test, meta)",
            f"  - {folder}/{ARCHIVE} (the official archive, {spec.mirrors[0]}{ARCHIVE}, md5 {spec.files[0].md5})",
            "To fix: run `fflab data download cifar100` (needs internet), or put one of these in place. To keep data "
            "elsewhere, set FFLAB_DATA to a folder holding cifar100/.",
        ]
    )


def load_cifar100(
    spec: DatasetSpec,
    data_dir: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool = True,
) -> Dataset:
    """Load CIFAR-100 (fine labels) from `<data dir>/cifar100/` (or `path`), downloading the official archive
    there if no copy is found and `download` is true."""
    folder = dataset_folder(spec, data_dir, path)
    copy = find_copy(folder)
    if copy is None:
        if not download:
            raise DataError(missing_message(folder, spec))
        try:
            [copy] = download_missing(spec, folder, progress=progress)
        except DataError as err:
            raise DataError(f"{err}\n\n{missing_message(folder, spec)}") from None
    contents = _read(copy, spec)
    if contents.errors:
        details = "\n".join(f"  - {message}" for message in contents.errors.values())
        raise DataError(
            f"Data set 'cifar100': {len(contents.errors)} of {len(MEMBERS)} files in {copy} failed verification:\n"
            f"{details}\nTo fix: delete the damaged copy and run `fflab data download cifar100`, or place the intact "
            f"official {ARCHIVE} (from {spec.mirrors[0]}) in {folder}/."
        )
    (train_x, train_y), (test_x, test_y) = (contents.splits[split] for split in SPLITS)
    return uint8_dataset(spec.name, train_x, train_y, test_x, test_y, contents.class_names)


def download_cifar100(
    spec: DatasetSpec,
    data_dir: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    mirrors: Sequence[str] | None = None,
) -> list[Path]:
    """Fetch the official archive into `<data dir>/cifar100/` unless a copy (archive or extracted folder) is
    already there; return the path of what holds the data."""
    folder = dataset_folder(spec, data_dir, None)
    copy = find_copy(folder)
    if copy is not None:
        return [copy]
    return download_missing(spec, folder, progress=progress, mirrors=mirrors)


def describe_cifar100(
    spec: DatasetSpec, data_dir: str | os.PathLike | None = None, path: str | os.PathLike | None = None
) -> list[tuple[Path, bool, str]]:
    """Check the CIFAR-100 copy on disk for `verify_dataset`: (path, ok, detail) for the copy, then per file."""
    folder = dataset_folder(spec, data_dir, path)
    copy = find_copy(folder)
    if copy is None:
        return [(folder, False, missing_message(folder, spec))]
    if copy.is_dir():
        layout = "layout: official python files, extracted"
    else:
        layout = f"layout: official python archive ({archive_md5_note(copy, spec.files[0].md5)})"
    try:
        contents = _read(copy, spec)
    except DataError as err:
        return [(copy, False, f"{layout}; {err}")]
    checks = [(copy, True, layout)]
    for member in MEMBERS:
        where = copy / member if copy.is_dir() else copy
        if member in contents.errors:
            checks.append((where, False, contents.errors[member]))
        elif member == "meta":
            official = "the official names" if contents.class_names == CIFAR100_CLASSES else "not the official names"
            checks.append((where, True, f"{NUM_CLASSES} fine class names ({official})"))
        else:
            x, y = contents.splits[member]
            checks.append((where, True, f"uint8 [{len(x)}, {ROW}], {len(y)} fine labels in 0..{NUM_CLASSES - 1}"))
    return checks
