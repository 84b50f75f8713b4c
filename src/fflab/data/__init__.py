"""Data sets for fflab: IDX, CIFAR-10 and image-folder readers, registry of named sets, verified downloads,
in-memory tensors."""

from fflab.data.dataset import Dataset
from fflab.data.download import download_dataset
from fflab.data.idx import read_idx
from fflab.data.load import load_dataset
from fflab.data.paths import resolve_data_dir
from fflab.data.registry import DatasetSpec, FileSpec, available_datasets, get_spec
from fflab.data.sequences import FrameSource, SequenceDataset, load_sequence_dataset
from fflab.data.verify import FileCheck, verify_dataset

__all__ = [
    "Dataset",
    "DatasetSpec",
    "FileCheck",
    "FileSpec",
    "FrameSource",
    "SequenceDataset",
    "available_datasets",
    "download_dataset",
    "get_spec",
    "load_dataset",
    "load_sequence_dataset",
    "read_idx",
    "resolve_data_dir",
    "verify_dataset",
]
