"""The data a run's config names, and the held-out split it reports: shared by train, resume, eval and analyze."""

from __future__ import annotations

import dataclasses

from fflab.config import Config
from fflab.data import Dataset, FrameSource, SequenceDataset, load_dataset, load_sequence_dataset
from fflab.errors import DataError, FFLabError

SEQUENCE_SETS = ("seq-mnist", "moving-mnist")


def rows(x, start: int, stop: int):
    """Rows start..stop-1 of a tensor, or (lazily) of a sequence frame source."""
    return x.rows(start, stop) if isinstance(x, FrameSource) else x[start:stop]


def evaluation_split(cfg: Config) -> str:
    """The held-out set a run monitors and reports: 'validation' (data.validation) or 'test'."""
    return "validation" if cfg.data.validation else "test"


def held_out_scores(split: str, result: dict) -> dict:
    """An evaluation's accuracies under the held-out split's name (`test_accuracy`, ...), as summaries store them."""
    return {f"{split}_{key}": result[key] for key in ("accuracy", "accuracy_by_method", "accuracy_per_layer")}


def load_for_config(cfg: Config, data_dir: str | None, progress: bool) -> Dataset | SequenceDataset:
    """The configured data set (images, or sequences derived from MNIST), cut to the configured subset sizes and,
    for images, shifted and scaled by data.mean and data.std.

    With data.validation = N the last N training samples take the test split's place, so nothing
    downstream can read the test set.
    """
    d = cfg.data
    if d.name in SEQUENCE_SETS:
        if d.name == "seq-mnist":
            permute = None if d.permute_seed < 0 else d.permute_seed
            options = {"mode": d.seq_mode, "chunk_size": d.chunk_size, "permute_seed": permute}
        else:
            options = {
                "frames": d.frames,
                "canvas": d.canvas,
                "digits": d.digits,
                "train_sequences": d.train_sequences,
                "test_sequences": d.test_sequences,
                "seed": d.sequence_seed,
            }
        ds = load_sequence_dataset(d.name, data_dir=data_dir, progress=progress, **options)
    else:
        ds = load_dataset(d.name, data_dir=data_dir, path=d.path or None, progress=progress)
    if ds.num_classes < 2:
        raise DataError(f"{ds.name} holds {ds.num_classes} class; Forward-Forward needs at least two to tell apart")
    n_train = min(d.train_subset or len(ds.train_x), len(ds.train_x))
    if d.validation >= n_train:
        raise FFLabError(f"data.validation = {d.validation} leaves no training samples of the {n_train} there are")
    n_fit = n_train - d.validation
    if d.validation:  # held out: the end of the training rows
        held_x, held_y, start, stop = ds.train_x, ds.train_y, n_fit, n_train
    else:
        held_x, held_y, start, stop = ds.test_x, ds.test_y, 0, d.test_subset or len(ds.test_x)
    train_x, test_x = rows(ds.train_x, 0, n_fit), rows(held_x, start, stop)
    if d.mean != 0.0 or d.std != 1.0:  # images only (the config refuses these settings for sequence data)
        train_x, test_x = (train_x - d.mean) / d.std, (test_x - d.mean) / d.std
    return dataclasses.replace(
        ds, train_x=train_x, train_y=ds.train_y[:n_fit], test_x=test_x, test_y=held_y[start:stop]
    )
