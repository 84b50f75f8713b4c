"""Checks of the files on disk: IDX structure, expected shape, payload SHA-256, image/label agreement.

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


def inspect_folder(spec: DatasetSpec, folder: Path) -> tuple[list[FileCheck], list[np.ndarray | None]]:
    """Check every file of `spec` in `folder`, then each split's image/label pair and train/test sizes.

    Returns one FileCheck per file of `spec.files` and, aligned with it, the array (None where it failed).
    """
    num_classes = len(spec.class_names) or None
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
    if spec.reader == "images":
        return [FileCheck(*check) for check in describe_image_folder(spec.name, path)]
    checks, _ = inspect_folder(spec, dataset_folder(spec, data_dir, path))
    return checks
