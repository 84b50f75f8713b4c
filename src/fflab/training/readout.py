"""Training the linear readout on top of frozen FF layers."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from fflab.batching import in_batches
from fflab.config import ReadoutSettings
from fflab.models import FFNetwork, RecurrentFFNetwork, evaluating


def readout_optimizer(params, settings: ReadoutSettings | None, lr: float | None = None) -> torch.optim.Optimizer:
    """The readout's optimiser as `settings` name it (Adam with no weight decay where there are none); `lr`
    overrides settings.lr."""
    lr = settings.lr if lr is None else lr
    if settings is not None and settings.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=settings.momentum, weight_decay=settings.weight_decay, fused=True
        )
    decay = settings.weight_decay if settings is not None else 0.0
    return torch.optim.Adam(params, lr=lr, weight_decay=decay, fused=True)


@torch.no_grad()
def readout_features(model: FFNetwork | RecurrentFFNetwork, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The readout's input for every row of `x`, computed once (the FF layers are frozen)."""
    model.eval()
    return in_batches(model.readout_features, x, batch_size)


class OnlineReadout:
    """The readout trained one step per training batch, alongside the FF layers (Hinton's code).

    Its logits on a batch are what the network currently believes about each label without being
    shown one (the features come from a neutral-label pass), so they rank the wrong labels for
    dynamic hard negatives; with readout.online it learns alongside whatever the negatives are (loeweX's
    classifier, trained each step on the layers from the second up). Its optimiser is readout.optimizer at
    readout.lr (Adam at `lr` without settings), scheduled by readout.lr_decay (`set_lr`).
    """

    def __init__(
        self, model: FFNetwork | RecurrentFFNetwork, settings: ReadoutSettings | None, lr: float | None = None
    ) -> None:
        if model.readout is None:
            raise ValueError("online readout scores need a readout (set readout.enabled = true)")
        self.model = model
        self.settings = settings
        self.base_lr = settings.lr if settings is not None else lr
        self.optimizer = readout_optimizer(model.readout.parameters(), settings, self.base_lr)

    def set_lr(self, progress: float, epochs: int) -> None:
        """Schedule the learning rate by readout.lr_decay at `progress` in [0, 1) of training (`epochs` long)."""
        from fflab.training.trainer import lr_factor

        if self.settings is None or self.settings.lr_decay == "none":
            return
        lr = self.base_lr * lr_factor(self.settings.lr_decay, progress, epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One softmax-regression step on (x, y); the logits [N, C] from before the step, detached."""
        with evaluating(self.model):  # the layers' answer, not one dropout draw; batch norm's statistics untouched
            features = self.model.readout_features(x)
        logits = self.model.readout(features)
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return logits.detach()

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The logits [N, C] without learning (for negatives made outside training)."""
        with evaluating(self.model):
            return self.model.readout(self.model.readout_features(x))


def train_readout(
    model: FFNetwork | RecurrentFFNetwork, x, y: torch.Tensor, settings: ReadoutSettings, seed: int = 0
) -> list[dict]:
    """Fit model.readout by softmax regression on the frozen layers' features; returns per-epoch stats.

    Features are computed once, so each readout epoch costs one small matrix product per batch.
    Only the readout's parameters are given to the optimiser: the FF layers cannot change. A readout
    that standardises its features starts from zero with the new statistics; otherwise training goes on
    from its current weights (a recurrent network's readout has learned online during FF training).
    With readout.epochs = 0 it stays as it learned online.
    """
    if model.readout is None:
        raise ValueError("the model has no readout (set readout.enabled = true)")
    if settings.epochs == 0:
        model.readout.eval()
        return []
    features = readout_features(model, x)
    readout = model.readout
    if readout.standardize:
        readout.fit_standardization(features)
    readout.train()
    opt = readout_optimizer(readout.parameters(), settings)
    gen = torch.Generator().manual_seed(seed)
    n, bs = len(features), settings.batch_size
    history = []
    for epoch in range(1, settings.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        total, correct = 0.0, 0
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            logits = readout(features[idx])
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == y[idx]).sum().item()
        history.append(
            {
                "readout_epoch": epoch,
                "loss": total / n,
                "train_accuracy": correct / n,
                "seconds": time.perf_counter() - start,
            }
        )
    readout.eval()
    return history
