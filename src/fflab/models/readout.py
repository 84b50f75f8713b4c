"""Linear softmax readout on the normalised activities of frozen FF layers (Hinton 2022, 3.2-3.3)."""

from __future__ import annotations

import torch
from torch import nn


class LinearReadout(nn.Module):
    """logits = W f + b, where f concatenates the chosen layers' activity directions.

    It is trained after the FF layers and never changes them (its inputs are computed without
    gradient). Zero-initialised, so an untrained readout predicts uniformly. With `standardize`, each
    feature is first shifted and scaled to zero mean and unit variance over the training set
    (`fit_standardization`): features of very different scales (e.g. time-averaged activities of a
    recurrent network) otherwise leave Adam a badly conditioned problem.
    """

    def __init__(
        self, in_features: int, num_classes: int, layers: list[int], standardize: bool = False, bias: bool = True
    ) -> None:
        super().__init__()
        self.layers = list(layers)
        self.linear = nn.Linear(in_features, num_classes, bias=bias)
        nn.init.zeros_(self.linear.weight)
        if bias:
            nn.init.zeros_(self.linear.bias)
        self.standardize = standardize
        if standardize:  # identity until fitted
            self.register_buffer("mean", torch.zeros(in_features))
            self.register_buffer("inv_std", torch.ones(in_features))

    @torch.no_grad()
    def fit_standardization(self, features: torch.Tensor) -> None:
        """Set the feature statistics from training features [N, in_features] and zero the weights, which
        were learned on differently scaled features. A feature constant over the training set is ignored
        (scale 0) rather than blown up."""
        std = features.std(0)
        self.mean.copy_(features.mean(0))
        self.inv_std.copy_(torch.where(std > 1e-6, 1.0 / std.clamp_min(1e-6), torch.zeros_like(std)))
        self.linear.weight.zero_()
        if self.linear.bias is not None:
            self.linear.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.standardize:
            features = (features - self.mean) * self.inv_std
        return self.linear(features)
