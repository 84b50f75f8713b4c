"""Where a run computes: resolving `train.device`, and moving an image data set there.

Image data sets are moved to the device whole (MNIST is 188 MB, CIFAR-10 614 MB as float32), so a
training step never waits for a host-to-device copy. All randomness is still drawn on the CPU
generator and moved, so a seed gives the same batches and negatives on every device.
"""

from __future__ import annotations

import dataclasses
import re

import torch

from fflab.errors import ConfigError, FFLabError

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
GPU_KINDS = ("ff", "backprop")  # model kinds whose training and prediction run on a CUDA device


def check_device_setting(device: str, kind: str) -> None:
    """Config-time checks of train.device: its spelling, and that the model kind can run there."""
    if not DEVICE_PATTERN.fullmatch(device):
        raise ConfigError(f"train.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device.startswith("cuda") and kind not in GPU_KINDS:
        raise ConfigError(
            f"train.device = {device!r}: model.kind {kind!r} runs on the CPU only so far "
            f"(CUDA: {', '.join(GPU_KINDS)}); set train.device = 'cpu' or 'auto'"
        )


def resolve_device(device: str, kind: str, local_rank: int = 0) -> torch.device:
    """The torch device a run of model `kind` uses for the setting `device`.

    "auto" takes a CUDA GPU when torch sees one and the kind can use it, else the CPU. A worker of a
    multi-process run given plain "cuda" takes GPU `local_rank` (one GPU per worker on each machine).
    """
    check_device_setting(device, kind)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() and kind in GPU_KINDS else "cpu"
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
    """The data set with its tensors on `device` (the same object on the CPU)."""
    if device.type == "cpu":
        return ds
    names = ("train_x", "train_y", "test_x", "test_y")
    if not all(isinstance(getattr(ds, name), torch.Tensor) for name in names):
        raise FFLabError(f"{ds.name}: sequence data sets are rendered on the CPU; train on train.device = 'cpu'")
    return dataclasses.replace(ds, **{name: getattr(ds, name).to(device) for name in names})
