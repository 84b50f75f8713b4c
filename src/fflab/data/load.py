"""`load_dataset`: find, (download,) verify and load a data set into memory as tensors."""

from __future__ import annotations

import os

from fflab.data.cifar import load_cifar10
from fflab.data.cifar100 import load_cifar100
from fflab.data.dataset import Dataset
from fflab.data.download import download_missing
from fflab.data.embedded import load_digits_dataset
from fflab.data.imagefolder import image_folder_dataset, uint8_dataset
from fflab.data.paths import dataset_folder, find_file, missing_message, repair_hint, require_path
from fflab.data.registry import get_spec
from fflab.data.verify import inspect_folder, label_classes
from fflab.errors import DataError


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    download: bool = True,
    progress: bool = True,
) -> Dataset:
    """Load a data set by name into memory (see `available_datasets()` for names).

    Files are looked for in `path` if given, else in `<data_dir>/<name>/` (data_dir defaults to
    $FFLAB_DATA, then the user cache). Missing official files are downloaded when `download` is true.
    Every file is checked (IDX structure, shape, official payload SHA-256 where known) before use.
    'cifar10' accepts several layouts (see fflab.data.cifar); 'image-folder' reads `path`/{train,test}/<class>/,
    decoding the images once and caching them as tensors under $FFLAB_CACHE.
    """
    spec = get_spec(name)
    if spec.kind == "derived":
        raise DataError(
            f"Data set {spec.name!r} holds sequences, not images: load it with "
            f"fflab.data.load_sequence_dataset({spec.name!r}, ...), which returns a SequenceDataset."
        )
    if spec.kind == "embedded":
        if path is not None:
            raise DataError(f"Data set {spec.name!r} is bundled with fflab's dependencies; it takes no path.")
        return load_digits_dataset(spec)
    if spec.kind == "folder":
        require_path(spec, path)
    if spec.reader == "cifar":
        return load_cifar10(spec, data_dir, path, download=download, progress=progress)
    if spec.reader == "cifar100":
        return load_cifar100(spec, data_dir, path, download=download, progress=progress)
    if spec.reader == "images":
        return image_folder_dataset(spec.name, path, progress=progress)
    folder = dataset_folder(spec, data_dir, path)
    missing = [file for file in spec.files if find_file(folder, file) is None]
    if missing:
        if not (download and spec.kind == "download"):
            raise DataError(missing_message(spec, folder, missing))
        download_missing(spec, folder, progress=progress)
    checks, arrays = inspect_folder(spec, folder)
    failed = [check for check in checks if not check.ok]
    if failed:
        details = "\n".join(f"  - {check.detail}" for check in failed)
        raise DataError(
            f"Data set {spec.name!r}: {len(failed)} of {len(checks)} files in {folder}/ "
            "failed verification:\n"
            f"{details}\n{repair_hint(spec, folder)}"
        )
    train_x, train_y, test_x, test_y = (array for array in arrays if array is not None)
    class_names, problems = label_classes(spec, folder, checks, arrays)
    if problems:
        raise DataError(f"Data set {spec.name!r}: {problems[0][1]}.")
    # IDX images are [N, H, W]: one grey channel.
    return uint8_dataset(spec.name, train_x[:, None], train_y, test_x[:, None], test_y, class_names)
