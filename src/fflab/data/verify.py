"""Checks of the files on disk: IDX structure, expected shape, payload SHA-256, image/label agreement, and
for a user's own IDX folder the classes its labels stand for.

The loader and `fflab data verify` share this one code path, so what `verify` reports is exactly what a
load would accept or reject.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fflab.data.cifar import describe_cifar10
from fflab.data.cifar100 import describe_cifar100
from fflab.data.embedded import describe_embedded
from fflab.data.idx import check_images, check_labels, check_pair, parse_idx, read_payload
from fflab.data.imagefolder import describe_image_folder
from fflab.data.paths import dataset_folder, find_file, require_path
from fflab.data.registry import DatasetSpec, FileSpec, get_spec
from fflab.errors import DataError


@dataclass(frozen=True)
class FileCheck:
    """Result of checking one file: `detail` says what was checked, or what failed and what was expected."""

    path: Path
    ok: bool
    detail: str


def check_file(path: Path, file: FileSpec, num_classes: int | None) -> tuple[np.ndarray, str]:
    """Read and check one file; return its array and a one-line summary, or raise DataError."""
    payload = read_payload(path)
    if file.sha256 is not None:
        digest = hashlib.sha256(payload).hexdigest()
        if digest != file.sha256:
            raise DataError(
                f"{path}: SHA-256 of the decompressed data is {digest}, expected the official {file.sha256}. "
                "The file is damaged or is not the official one."
            )
    array = parse_idx(payload, path)
    if file.shape is not None and array.shape != file.shape:
        raise DataError(f"{path} holds an array of shape {array.shape}; expected {file.shape} for {file.name}.")
    if file.role == "images":
        check_images(array, path)
    else:
        check_labels(array, path, num_classes)
    checksum = "payload SHA-256 matches the official file" if file.sha256 else "no official checksum known"
    return array, f"{array.dtype} {array.shape}, IDX structure ok, {checksum}"


CLASSES_FILE = "classes.txt"


def read_class_names(folder: Path) -> tuple[str, ...] | None:
    """The classes a user's IDX folder declares in classes.txt (one name a line; line k names label k), or None
    where it has none. Declared classes may have no training sample; labels beyond them are refused."""
    path = folder / CLASSES_FILE
    if not path.is_file():
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"Cannot read {path}: {err}.") from None
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise DataError(f"{path} names no classes: write one class name a line (line k names label k), or remove it.")
    if "" in names:
        raise DataError(f"{path}: line {names.index('') + 1} is empty; every line names one class (line k: label k).")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DataError(f"{path} names {twice[0]!r} more than once; every class needs its own name.")
    return tuple(names)


def _ranges(values: np.ndarray) -> str:
    """Sorted integers as '3, 10..41'."""
    runs: list[list[int]] = []
    for v in (int(v) for v in values):
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)


def label_classes(
    spec: DatasetSpec, folder: Path, checks: list[FileCheck], arrays: list[np.ndarray | None]
) -> tuple[tuple[str, ...], list[tuple[int, str]]]:
    """The class names of a checked IDX folder, and what is wrong with its labels as (index into `spec.files`,
    message) pairs. A named set has its own classes; a user's folder those of its classes.txt, else one per
    training label 0..max, each of which must have a training sample (a stray label such as one 42 among
    0..9 would otherwise make 33 classes nothing teaches) and no test label may go beyond."""
    if spec.class_names:
        return spec.class_names, []
    declared = read_class_names(folder)
    if declared is not None:  # each label file was checked against them
        return declared, []
    train, test = arrays[1], arrays[3]
    if train is None or train.size == 0:
        return (), []
    count = int(train.max()) + 1
    names = tuple(str(label) for label in range(count))
    hint = f"if the data set has more classes than its training labels show, name them in {folder / CLASSES_FILE}"
    problems = []
    empty = np.flatnonzero(np.bincount(train, minlength=count) == 0)
    if len(empty):
        top = int(np.argmax(train == count - 1))
        samples = int((train == count - 1).sum())
        problems.append(
            (
                1,
                f"{checks[1].path}: classes {_ranges(empty)} have no training sample, yet label {count - 1} occurs "
                f"(first at index {top}, {samples} sample{'s' if samples > 1 else ''}); fix a stray label, or {hint} "
                "(one name a line)",
            )
        )
    if test is not None and test.size and int(test.max()) >= count:
        index = int(np.argmax(test >= count))
        problems.append(
            (
                3,
                f"{checks[3].path} holds label {int(test[index])} at index {index}, but the training labels know "
                f"classes 0..{count - 1} only; fix the label, or {hint} (one name a line)",
            )
        )
    return names, problems


def inspect_folder(spec: DatasetSpec, folder: Path) -> tuple[list[FileCheck], list[np.ndarray | None]]:
    """Check every file of `spec` in `folder`, then each split's image/label pair and train/test sizes.

    Returns one FileCheck per file of `spec.files` and, aligned with it, the array (None where it failed).
    """
    declared = None if spec.class_names else read_class_names(folder)
    num_classes = len(spec.class_names or declared or ()) or None
    checks: list[FileCheck] = []
    arrays: list[np.ndarray | None] = []
    for file in spec.files:
        found = find_file(folder, file)
        if found is None:
            checks.append(FileCheck(folder / file.name, False, f"missing: none of {', '.join(file.candidates)}"))
            arrays.append(None)
            continue
        try:
            array, detail = check_file(found, file, num_classes)
        except DataError as err:
            checks.append(FileCheck(found, False, str(err)))
            arrays.append(None)
        else:
            checks.append(FileCheck(found, True, detail))
            arrays.append(array)

    def fail(index: int, err: DataError) -> None:
        checks[index] = FileCheck(checks[index].path, False, str(err))
        arrays[index] = None

    for images, labels in ((0, 1), (2, 3)):
        if arrays[images] is not None and arrays[labels] is not None:
            try:
                check_pair(arrays[images], arrays[labels], checks[images].path, checks[labels].path)
            except DataError as err:
                fail(labels, err)
    train, test = arrays[0], arrays[2]
    if train is not None and test is not None and train.shape[1:] != test.shape[1:]:
        fail(
            2,
            DataError(
                f"{checks[2].path} holds {test.shape[1]}x{test.shape[2]} images but {checks[0].path} holds "
                f"{train.shape[1]}x{train.shape[2]}; train and test images must have the same size."
            ),
        )
    return checks, arrays


def verify_dataset(
    name: str, data_dir: str | os.PathLike | None = None, *, path: str | os.PathLike | None = None
) -> list[FileCheck]:
    """Check a data set's files on disk without loading it into torch; one FileCheck per file.

    `path` is the folder holding the files (required for 'idx' and 'image-folder'; overrides
    `<data_dir>/<name>` otherwise). For 'cifar10' the first check names the layout found.
    """
    spec = get_spec(name)
    if spec.kind == "derived":
        return verify_dataset(spec.base, data_dir, path=path)
    if spec.kind == "embedded":
        return [FileCheck(*describe_embedded(spec))]
    if spec.kind == "folder":
        require_path(spec, path)
    if spec.reader == "cifar":
        return [FileCheck(*check) for check in describe_cifar10(spec, data_dir, path)]
    if spec.reader == "cifar100":
        return [FileCheck(*check) for check in describe_cifar100(spec, data_dir, path)]
    if spec.reader == "images":
        return [FileCheck(*check) for check in describe_image_folder(spec.name, path)]
    folder = dataset_folder(spec, data_dir, path)
    checks, arrays = inspect_folder(spec, folder)
    for index, problem in label_classes(spec, folder, checks, arrays)[1]:
        checks[index] = FileCheck(checks[index].path, False, problem)
    return checks
