"""One trainer for FF wirings: batches in, local updates out.

Each learner has its own optimiser. The wiring returns one loss per learner; because every
learner's input is detached, backpropagating those losses together gives each learner the
gradient of its own loss only (tests check this), and each optimiser then steps its learner.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from fflab.config import TrainSettings
from fflab.models import FFNetwork
from fflab.supervision import SupervisedPairs


def make_optimizer(params, settings: TrainSettings) -> torch.optim.Optimizer:
    """The optimiser named in the settings, for one learner's parameters.

    The fused implementations are used: on CPU they are about 10x faster than the default
    per-tensor loops, which otherwise cost a fifth of a training step at batch 100.
    """
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay, fused=True
        )
    cls = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=settings.lr, weight_decay=settings.weight_decay, fused=True)


def lr_factor(schedule: str, progress: float) -> float:
    """Multiplier of the base learning rate at `progress` in [0, 1) of training.

    hinton: constant for the first half, then linear decay to zero (Hinton 2022).
    """
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "hinton":
        return min(1.0, 2.0 * (1.0 - progress))
    return 1.0


@dataclass
class EpochStats:
    """What one epoch of training measured, per learner where it applies."""

    epoch: int
    loss: list[float]
    goodness_pos: list[float]
    goodness_neg: list[float]
    lr: float
    train_seconds: float
    samples_per_second: float
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        return {**d, **self.extra}


class FFTrainer:
    """Trains an FFNetwork's learners with local updates on every mini-batch."""

    def __init__(self, model: FFNetwork, settings: TrainSettings, *, progress: bool = True) -> None:
        self.model = model
        self.settings = settings
        self.progress = progress
        self.optimizers = [make_optimizer(layer.parameters(), settings) for layer in model.layers]
        self.pairs = SupervisedPairs(model.embedding, settings.negatives, settings.hard_temperature)
        self.scorer = model.hard_negative_scorer(settings.hard_scores)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.steps_done = 0

    def _set_lr(self, progress: float) -> float:
        lr = self.settings.lr * lr_factor(self.settings.lr_decay, progress)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def flops_per_sample(self) -> int:
        """Matrix-multiply FLOPs one training sample costs: the local updates (4 forward passes'
        worth, see FFNetwork.forward_flops) plus scoring candidate labels for hard negatives."""
        flops = 4 * self.model.forward_flops()
        if self.settings.negatives != "random":
            layers = self.model.layers
            first = 2 * layers[0].in_features * layers[0].out_features
            depth = 1 if self.settings.hard_scores == "first_layer" else max(self.model.predict_layers) + 1
            rest = sum(2 * layer.in_features * layer.out_features for layer in layers[1:depth])
            flops += first + self.model.num_classes * rest
        return flops

    def make_pairs(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Positive rows then negative rows for (x, y), made as training makes them."""
        return self.pairs.make(x, y, generator or self.generator, self.scorer)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> list:
        """One local update of every learner on the batch (x, y); returns each LocalResult."""
        both = self.make_pairs(x, y)
        results = self.model.local_losses(both, n_pos=len(x))
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        torch.autograd.backward([r.loss for r in results])
        for opt in self.optimizers:
            opt.step()
        self.steps_done += 1
        return results

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> EpochStats:
        """One pass over (x, y) in a fresh random order."""
        self.model.train()
        n, bs = len(x), self.settings.batch_size
        steps_per_epoch = math.ceil(n / bs)
        total_steps = steps_per_epoch * self.settings.epochs
        order = torch.randperm(n, generator=self.generator)
        n_layers = len(self.model.layers)
        sums = torch.zeros(3, n_layers, dtype=torch.float64)
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch}/{self.settings.epochs}",
            disable=None if self.progress else True,  # None: only on a terminal
            leave=False,
            unit="batch",
        )
        start = time.perf_counter()
        lr = self.settings.lr
        for i in bar:
            lr = self._set_lr(self.steps_done / total_steps)
            idx = order[i * bs : (i + 1) * bs]
            results = self.step(x[idx], y[idx])
            k = len(idx)
            for j, r in enumerate(results):
                sums[0, j] += r.loss.item() * k
                sums[1, j] += r.goodness[:k].mean().item() * k
                sums[2, j] += r.goodness[k:].mean().item() * k
            if i % 50 == 0:
                bar.set_postfix(loss=f"{sums[0].sum().item() / ((i * bs + k) * n_layers):.4f}")
        seconds = time.perf_counter() - start
        means = (sums / n).tolist()
        return EpochStats(epoch, means[0], means[1], means[2], lr, seconds, n / seconds)

    def fit(
        self, x: torch.Tensor, y: torch.Tensor, on_epoch: Callable[[EpochStats], None] | None = None
    ) -> list[EpochStats]:
        """Train for settings.epochs epochs; `on_epoch` sees each epoch's stats as they arrive."""
        history = []
        for epoch in range(1, self.settings.epochs + 1):
            stats = self.train_epoch(x, y, epoch)
            if on_epoch is not None:
                on_epoch(stats)
            history.append(stats)
        return history
