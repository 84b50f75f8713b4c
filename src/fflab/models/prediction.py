"""What a network's prediction returns: the labels predicted by each of its methods, and by each layer alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class Predictions:
    """Predicted labels [N] by every method a network has ("goodness", "readout", "goodness+readout",
    "backprop"), and by each layer's goodness alone (empty where a network has no per-layer vote)."""

    by_method: dict[str, torch.Tensor]
    per_layer: list[torch.Tensor] = field(default_factory=list)

    def __getitem__(self, method: str) -> torch.Tensor:
        return self.by_method[method]


def predict_from_scores(scores: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
    """argmax over labels of the scores [N, C, L] summed over the chosen layers."""
    return scores[:, :, list(layers)].sum(2).argmax(1)
