"""Accuracy of a trained FF network: by goodness over all labels, overall and per layer."""

from __future__ import annotations

import torch

from fflab.models import FFNetwork, predict_from_scores


@torch.no_grad()
def evaluate(model: FFNetwork, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> dict:
    """accuracy (chosen layers summed) and accuracy_per_layer (each layer alone)."""
    model.eval()
    scores = model.scores_in_batches(x, batch_size)
    acc = (predict_from_scores(scores, model.predict_layers) == y).float().mean().item()
    per_layer = [
        (predict_from_scores(scores, [j]) == y).float().mean().item() for j in range(scores.shape[2])
    ]
    return {"accuracy": acc, "accuracy_per_layer": per_layer}


@torch.no_grad()
def goodness_samples(model: FFNetwork, pairs, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
    """Per-layer goodness of positive and of negative data for the samples (x, y)."""
    model.eval()
    both = pairs.make(x, y, generator)
    results = model.local_losses(both, n_pos=len(x))
    n = len(x)
    return [r.goodness[:n] for r in results], [r.goodness[n:] for r in results]
