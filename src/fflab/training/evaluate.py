"""Accuracy of a trained network by every prediction method it has."""

from __future__ import annotations

import torch

from fflab.config import Config
from fflab.families import get_family


def primary_method(cfg: Config) -> str:
    """The prediction method whose accuracy a run reports as test_accuracy (its family decides)."""
    return get_family(cfg.model.kind).primary_method(cfg)


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000, primary: str | None = None) -> dict:
    """accuracy (of the `primary` method, default the model's first), accuracy_by_method, and
    accuracy_per_layer (FF goodness of each layer alone; empty for networks without it)."""
    predictions = model.predictions(x, batch_size)
    by_method = {name: (pred == y).float().mean().item() for name, pred in predictions.by_method.items()}
    primary = primary or next(iter(by_method))
    if primary not in by_method:
        raise ValueError(f"this model cannot predict by {primary!r}; it has {sorted(by_method)}")
    per_layer = [(pred == y).float().mean().item() for pred in predictions.per_layer]
    return {"accuracy": by_method[primary], "accuracy_by_method": by_method, "accuracy_per_layer": per_layer}


@torch.no_grad()
def goodness_samples(model, both: torch.Tensor, n_pos: int, labels: torch.Tensor | None = None) -> tuple[list, list]:
    """Per-layer goodness of the positive rows (the first `n_pos`) and of the negative rows of `both`
    (competitive learners: of each sample's own class group and of the other groups, given `labels`)."""
    model.eval()
    results = model.local_losses(both, n_pos=n_pos, labels=labels)
    return [r.goodness[:n_pos] for r in results], [r.goodness[n_pos:] for r in results]
