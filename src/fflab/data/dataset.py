"""The in-memory data set every model and trainer consumes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from fflab.errors import DataError


def check_finite(x: torch.Tensor, what: str) -> None:
    """DataError naming the first NaN or infinite value of `x` (`what` names the tensor, e.g. 'mnist: train_x')
    by its sample, position and value. One sum decides whether to look: summing finite values in [0, 1] cannot
    overflow, and a NaN or infinity makes the sum one too."""
    if x.numel() == 0 or x.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        return
    if torch.isfinite(x.sum()):
        return
    bad = (~torch.isfinite(x)).nonzero()
    if len(bad) == 0:  # finite values whose sum overflowed
        return
    first = tuple(int(i) for i in bad[0])
    position = f" at {first[1:]}" if len(first) > 2 else f", feature {first[1]}" if len(first) == 2 else ""
    raise DataError(
        f"{what}[{first[0]}] holds {float(x[first])}{position} ({len(bad)} non-finite value"
        f"{'s' if len(bad) > 1 else ''} in all); inputs must be finite numbers: fix or drop those samples."
    )


def check_classes(y: torch.Tensor, num_classes: int, what: str) -> None:
    """DataError naming the first label of `y` outside 0..num_classes-1, by its index and value."""
    if y.numel() == 0:
        return
    low, high = int(y.min()), int(y.max())
    if low >= 0 and high < num_classes:
        return
    bad = ((y < 0) | (y >= num_classes)).nonzero()
    index = int(bad[0, 0])
    raise DataError(
        f"{what}[{index}] = {int(y[index])} is not one of the {num_classes} classes 0..{num_classes - 1} "
        f"({len(bad)} label{'s' if len(bad) > 1 else ''} outside them)."
    )


@dataclass(frozen=True, eq=False)
class Dataset:
    """A whole data set as tensors: x float32 [N, C, H, W] in [0, 1] as loaded (a run's data.mean and data.std may
    shift and scale it), y int64 [N] in [0, num_classes).

    Made from anything (a loader or your own arrays), it checks this: a NaN or infinite input or a label
    outside the classes is a DataError naming the split, the sample and the value.

    `eq=False`: comparing tensors element-wise is never what `==` on data sets should mean.
    """

    name: str
    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    num_classes: int
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dtype != torch.float32 or x.dim() != 4:
                raise DataError(f"{self.name}: {split}_x must be float32 [N, C, H, W], got {x.dtype} {tuple(x.shape)}.")
            if y.dtype != torch.int64 or y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise DataError(
                    f"{self.name}: {split}_y must be int64 [N] with N = {x.shape[0]}, got {y.dtype} {tuple(y.shape)}."
                )
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DataError(
                f"{self.name}: train and test inputs differ in shape: {tuple(self.train_x.shape[1:])} vs "
                f"{tuple(self.test_x.shape[1:])}."
            )
        if len(self.class_names) != self.num_classes:
            raise DataError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes.")
        for split in ("train", "test"):
            check_finite(getattr(self, f"{split}_x"), f"{self.name}: {split}_x")
            check_classes(getattr(self, f"{split}_y"), self.num_classes, f"{self.name}: {split}_y")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input."""
        c, h, w = self.train_x.shape[1:]
        return (c, h, w)

    @property
    def input_dim(self) -> int:
        """Number of values in one input, C*H*W."""
        return math.prod(self.input_shape)
