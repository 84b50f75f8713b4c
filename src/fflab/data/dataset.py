"""The in-memory data set every model and trainer consumes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from fflab.errors import DataError


@dataclass(frozen=True, eq=False)
class Dataset:
    """A whole data set as tensors: x float32 [N, C, H, W] in [0, 1], y int64 [N] in [0, num_classes).

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

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input."""
        c, h, w = self.train_x.shape[1:]
        return (c, h, w)

    @property
    def input_dim(self) -> int:
        """Number of values in one input, C*H*W."""
        return math.prod(self.input_shape)
