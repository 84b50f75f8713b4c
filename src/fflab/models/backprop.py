"""Backprop baseline: the FF network's layers trained end to end with cross-entropy.

The hidden layers are the same FF layer modules (dense, convolutional or locally connected, with the
same input normalisation, activation and initialisation) so that FF and backprop rows in a
benchmark differ only in how they learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fflab.batching import in_batches
from fflab.layers import FFLearner
from fflab.models.prediction import Predictions


class BackpropNetwork(nn.Module):
    """A chain of layers and a linear classifier head; gradients flow through everything."""

    kind = "backprop"  # its family (fflab.families)

    def __init__(self, layers: Sequence[FFLearner], num_classes: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.head = nn.Linear(layers[-1].out_features, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for layer in self.layers:
            h = layer(h)  # no detach: this is backprop
        return self.head(h.flatten(1))

    @torch.no_grad()
    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """Every hidden layer's activity, concatenated [N, sum H]."""
        h, out = x.flatten(1), []
        for layer in self.layers:
            h = layer(h)
            out.append(h.flatten(1))
        return torch.cat(out, dim=1)

    def forward_flops(self) -> int:
        """Matrix-multiply FLOPs of one forward pass (training costs about 3x: forward, input and weight
        gradients)."""
        layers = sum(layer.forward_flops() for layer in self.layers)
        return layers + 2 * self.head.in_features * self.head.out_features

    @torch.no_grad()
    def predictions(self, x: torch.Tensor, batch_size: int = 1000) -> Predictions:
        """The head's predicted labels, as method "backprop"."""
        self.eval()
        return Predictions({"backprop": self.predict(x, batch_size)})

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """The head's best class for each input, a chunk at a time."""
        return in_batches(self, x, batch_size).argmax(1)
