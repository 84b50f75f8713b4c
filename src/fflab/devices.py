"""Where a run computes: resolving `train.device`, and moving an image data set there.

Image data sets are moved to the device whole (MNIST is 188 MB, CIFAR-10 614 MB as float32), so a
training step never waits for a host-to-device copy. All randomness is still drawn on the CPU
generator and moved, so a seed gives the same batches and negatives on every device.
"""

from __future__ import annotations

import dataclasses
import re

import torch

from fflab.data.registry import get_spec
from fflab.errors import ConfigError, FFLabError

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
GPU_KINDS = ("ff", "backprop")  # model kinds whose training and prediction run on a CUDA device


def gpu_capable(kind: str, data_name: str) -> bool:
    """Whether a run of model `kind` on data set `data_name` can use a GPU: sequence data sets are
    rendered batch by batch on the CPU, and only some model kinds place their tensors on a device."""
    return kind in GPU_KINDS and get_spec(data_name).kind != "derived"


def check_device_setting(device: str, kind: str, data_name: str) -> None:
    """Config-time checks of train.device: its spelling, and that the run can use a GPU if it names one."""
    if not DEVICE_PATTERN.fullmatch(device):
        raise ConfigError(f"train.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device.startswith("cuda") and not gpu_capable(kind, data_name):
        raise ConfigError(
            f"train.device = {device!r}: model.kind {kind!r} on {data_name!r} runs on the CPU only so far (CUDA: "
            f"kinds {', '.join(GPU_KINDS)} on image data); set train.device = 'cpu' or 'auto'"
        )


def resolve_device(cfg, local_rank: int = 0, gpus_needed: int = 1) -> torch.device:
    """The torch device for a run of `cfg` (a validated Config), on the worker with this `local_rank`.

    "auto" takes a CUDA GPU when the run can use one and torch sees at least `gpus_needed` (one per
    worker on this machine), else the CPU. A worker given plain "cuda" takes GPU `local_rank`.
    """
    device = cfg.train.device
    if device == "auto":
        enough = torch.cuda.is_available() and torch.cuda.device_count() >= gpus_needed
        device = "cuda" if enough and gpu_capable(cfg.model.kind, cfg.data.name) else "cpu"
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
