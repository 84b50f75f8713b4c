"""The `digits` set: scikit-learn's bundled 8x8 digits, so fflab has a data set that never downloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fflab.data.dataset import Dataset
from fflab.data.registry import DatasetSpec

TEST_SIZE = 360  # 1,797 images -> 1,437 train / 360 test, as commonly reported for this set
SPLIT_SEED = 0


def _digits() -> tuple[np.ndarray, np.ndarray, Path]:
    """Pixels [1797, 8, 8] in 0..16, labels [1797] and the file they come from."""
    # Imported here: scikit-learn takes about a second to import and only this set needs it.
    import sklearn.datasets

    bunch = sklearn.datasets.load_digits()
    source = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    return bunch.images, bunch.target, source


def load_digits_dataset(spec: DatasetSpec) -> Dataset:
    """Digits scaled to [0, 1] as [N, 1, 8, 8], split train/test stratified by class with a fixed seed."""
    from sklearn.model_selection import train_test_split

    images, labels, _ = _digits()
    x = torch.from_numpy((images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    train, test = train_test_split(np.arange(len(y)), test_size=TEST_SIZE, stratify=labels, random_state=SPLIT_SEED)
    train, test = torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(test))
    return Dataset(spec.name, x[train], y[train], x[test], y[test], len(spec.class_names), spec.class_names)


def describe_embedded(spec: DatasetSpec) -> tuple[Path, bool, str]:
    """Check the bundled digits: (source file, ok, detail) for `verify_dataset`."""
    images, labels, source = _digits()
    ok = images.shape == (1797, 8, 8) and images.min() >= 0 and images.max() <= 16 and set(labels) == set(range(10))
    detail = (
        f"bundled with scikit-learn: {images.shape[0]} images 8x8, values 0..16, {len(set(labels))} classes"
        if ok
        else f"unexpected content from scikit-learn: images {images.shape}, values {images.min()}..{images.max()}"
    )
    return source, ok, detail
