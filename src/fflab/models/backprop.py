"""Backprop baseline: the FF network's layers trained end to end with cross-entropy.

The hidden layers are the same FF layer modules (dense, convolutional or locally connected, with the
same input normalisation, activation and initialisation) so that FF and backprop rows in a
benchmark differ only in how they learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fflab.layers import FFLearner


class BackpropNetwork(nn.Module):
    """A chain of layers and a linear classifier head; gradients flow through everything."""

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
    def predictions(self, x: torch.Tensor, batch_size: int = 1000) -> dict[str, torch.Tensor]:
        """{"backprop": predicted labels}."""
        self.eval()
        return {"backprop": torch.cat([self(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])}
