"""Linear softmax readout on the normalised activities of frozen FF layers (Hinton 2022, 3.2-3.3)."""

from __future__ import annotations

import torch
from torch import nn


class LinearReadout(nn.Module):
    """logits = W f + b, where f concatenates the chosen layers' activity directions.

    It is trained after the FF layers and never changes them (its inputs are computed without
    gradient). Zero-initialised, so an untrained readout predicts uniformly.
    """

    def __init__(self, in_features: int, num_classes: int, layers: list[int]) -> None:
        super().__init__()
        self.layers = list(layers)
        self.linear = nn.Linear(in_features, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)
