"""Data sets for fflab: IDX, CIFAR-10 and image-folder readers, registry of named sets, verified downloads,
in-memory tensors.

The names below are imported on first use, so that the registry (`fflab.data.registry`, which the config
schema reads) loads without torch.
"""

from importlib import import_module

_HOMES = {
    "Dataset": "dataset",
    "download_dataset": "download",
    "read_idx": "idx",
    "load_dataset": "load",
    "resolve_data_dir": "paths",
    "DatasetSpec": "registry",
    "FileSpec": "registry",
    "available_datasets": "registry",
    "get_spec": "registry",
    "FrameSource": "sequences",
    "SequenceDataset": "sequences",
    "load_sequence_dataset": "sequences",
    "FileCheck": "verify",
    "verify_dataset": "verify",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'fflab.data' has no attribute {name!r}")
    return getattr(import_module(f"fflab.data.{_HOMES[name]}"), name)
