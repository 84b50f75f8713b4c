"""Accuracy of a trained network by every prediction method it has."""

from __future__ import annotations

import torch

from fflab.models import FFNetwork


@torch.no_grad()
def primary_method(cfg) -> str:
    """The prediction method whose accuracy a run reports as test_accuracy."""
    return "backprop" if cfg.model.kind == "backprop" else cfg.eval.predict


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000, primary: str | None = None) -> dict:
    """accuracy (of the `primary` method, default the model's first), accuracy_by_method, and
    accuracy_per_layer (FF goodness of each layer alone; empty for networks without it)."""
    predictions = model.predictions(x, batch_size)
    by_method = {name: (pred == y).float().mean().item() for name, pred in predictions.items()}
    primary = primary or next(iter(predictions))
    if primary not in by_method:
        raise ValueError(f"this model cannot predict by {primary!r}; it has {sorted(by_method)}")
    prefix = "goodness_layer"
    per_layer = [
        by_method[k]
        for k in sorted((k for k in by_method if k.startswith(prefix)), key=lambda k: int(k[len(prefix) :]))
    ]
    main = {k: v for k, v in by_method.items() if not k.startswith("goodness_layer")}
    return {"accuracy": by_method[primary], "accuracy_by_method": main, "accuracy_per_layer": per_layer}


@torch.no_grad()
def goodness_samples(
    model: FFNetwork, both: torch.Tensor, n_pos: int, labels: torch.Tensor | None = None
) -> tuple[list, list]:
    """Per-layer goodness of the positive rows (the first `n_pos`) and of the negative rows of `both`
    (competitive learners: of each sample's own class group and of the other groups, given `labels`)."""
    model.eval()
    results = model.local_losses(both, n_pos=n_pos, labels=labels)
    return [r.goodness[:n_pos] for r in results], [r.goodness[n_pos:] for r in results]
