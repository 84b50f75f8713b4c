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
    per_layer = [(predict_from_scores(scores, [j]) == y).float().mean().item() for j in range(scores.shape[2])]
    return {"accuracy": acc, "accuracy_per_layer": per_layer}


@torch.no_grad()
def goodness_samples(model: FFNetwork, both: torch.Tensor, n_pos: int) -> tuple[list, list]:
    """Per-layer goodness of the positive rows (the first `n_pos`) and of the negative rows of `both`."""
    model.eval()
    results = model.local_losses(both, n_pos=n_pos)
    return [r.goodness[:n_pos] for r in results], [r.goodness[n_pos:] for r in results]
