"""Where a run computes: resolving `train.device`, and moving an image data set there.

Image data sets are moved to the device whole (MNIST is 188 MB, CIFAR-10 614 MB as float32), so a
training step never waits for a host-to-device copy. All randomness is still drawn on the CPU
generator and moved, so a seed gives the same batches and negatives on every device.
"""

from __future__ import annotations

import dataclasses

import torch

from fflab.config import gpu_capable
from fflab.errors import FFLabError
from fflab.families import get_family


def resolve_device(cfg, local_rank: int = 0, gpus_needed: int = 1) -> torch.device:
    """The torch device for a run of `cfg` (a validated Config), on the worker with this `local_rank`.

    "auto" takes a CUDA GPU when the run can use one and torch sees at least `gpus_needed` (one per
    worker on this machine), else the CPU. A worker given plain "cuda" takes GPU `local_rank`.
    """
    device = cfg.train.device
    if device == "auto":
        enough = torch.cuda.is_available() and torch.cuda.device_count() >= gpus_needed
        device = "cuda" if enough and gpu_capable(get_family(cfg.model.kind), cfg.data.name) else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise FFLabError(
            f"train.device = {device!r}, but this torch ({torch.__version__}) sees no CUDA GPU; "
            "set train.device = 'cpu' or 'auto'"
        )
    index = int(device.split(":")[1]) if ":" in device else local_rank
    if index >= torch.cuda.device_count():
        raise FFLabError(f"train.device: GPU {index} asked for, but torch sees {torch.cuda.device_count()} GPU(s)")
    return torch.device("cuda", index)


def dataset_to(ds, device: torch.device):
    """The image data set with its tensors on `device` (the same object on the CPU)."""
    if device.type == "cpu":
        return ds
    names = ("train_x", "train_y", "test_x", "test_y")
    return dataclasses.replace(ds, **{name: getattr(ds, name).to(device) for name in names})
