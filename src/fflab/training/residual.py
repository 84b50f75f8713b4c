"""Trainers of residual FF networks (kind "residual-ff"): in one process, and layer-parallel.

Both take the learning rate of `train.lr_decay` down to a floor, `lr_min`, and may hold it for a whole epoch
(`lr_every = "epoch"`): torch's CosineAnnealingLR(T_max = epochs, eta_min = lr_min) stepped after each epoch, as
DeeperForward trains. The layer-parallel trainer is fflab's pipeline (fflab.training.parallel), whose stages send
the next stage both what their last learner passes on and the live shortcut of the residual wiring.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from fflab.errors import FFLabError
from fflab.models import LocalResult
from fflab.training.parallel import DistributedFFTrainer
from fflab.training.trainer import FFTrainer, lr_factor

HEADER = 8  # int64 slots: n_pos, ndim (0: no tensor), then up to 6 dims


class FlooredSchedule:
    """The lr schedule of train.lr_decay between train.lr and `lr_min`, stepped every batch or every epoch."""

    lr_min: float = 0.0
    lr_every: str = "batch"

    def _set_lr(self, progress: float) -> float:
        s = self.settings
        if self.lr_every == "epoch":  # progress * epochs = epoch + (batch / batches): keep the epoch
            progress = int(progress * s.epochs + 1e-9) / s.epochs
        lr = self.lr = self.lr_min + (s.lr - self.lr_min) * lr_factor(s.lr_decay, progress)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        return lr


class ResidualFFTrainer(FlooredSchedule, FFTrainer):
    """FFTrainer for a ResidualFFNetwork (whose `local_losses` runs the residual wiring), with the floored schedule."""

    def __init__(self, model, settings, *, lr_min: float = 0.0, lr_every: str = "batch", **options) -> None:
        self.lr_min, self.lr_every = lr_min, lr_every
        super().__init__(model, settings, **options)


class DistributedResidualTrainer(FlooredSchedule, DistributedFFTrainer):
    """One rank's share of a layer-parallel run of a ResidualFFNetwork (DeeperForward's layer-parallel schedule:
    stage k trains its learners on batch t while stage k+1 trains on batch t-1; nothing flows back).

    A stage receives what the learner below it passed on and the shortcut live at that point (or the images, at
    stage 0), runs its learners through the residual wiring, and sends both on."""

    def __init__(self, model, settings, plan, *, lr_min: float = 0.0, lr_every: str = "batch", **options) -> None:
        self.lr_min, self.lr_every = lr_min, lr_every
        super().__init__(model, settings, plan, **options)

    def _header(self, t: torch.Tensor | None, n_pos: int) -> torch.Tensor:
        header = torch.zeros(HEADER, dtype=torch.long)
        header[0] = n_pos
        if t is not None:
            if t.dim() > HEADER - 2:
                raise FFLabError(f"tensors of {t.dim()} dimensions are too many to send between stages")
            header[1] = t.dim()
            header[2 : 2 + t.dim()] = torch.tensor(t.shape)
        return header.to(self.device)

    def _send_state(self, z: torch.Tensor, shortcut: torch.Tensor | None, labels: torch.Tensor, n_pos: int) -> None:
        """Send the representation, the shortcut (a header saying "none" where there is none) and the labels up;
        asynchronous, with at most two batches in flight."""
        dest = self.plan.rank_of(self.stage + 1, self.replica)
        tensors = [self._header(z, n_pos), z.detach().float().contiguous(), self._header(shortcut, n_pos)]
        if shortcut is not None:
            tensors.append(shortcut.detach().float().contiguous())
        tensors.append(labels.contiguous())
        self._blocking("sending to the next stage", lambda: [w.wait() for w in self.pending_sends])
        self.pending_sends = [dist.isend(t, dest) for t in tensors]

    def _receive_state(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, int]:
        source = self.plan.rank_of(self.stage - 1, self.replica)

        def tensor_after(header: torch.Tensor) -> torch.Tensor | None:
            dist.recv(header, source)
            ndim = int(header[1])
            if ndim == 0:
                return None
            t = torch.empty(header[2 : 2 + ndim].tolist(), device=self.device)
            dist.recv(t, source)
            return t

        def receive():
            first = torch.empty(HEADER, dtype=torch.long, device=self.device)
            z = tensor_after(first)
            shortcut = tensor_after(torch.empty(HEADER, dtype=torch.long, device=self.device))
            n_pos = int(first[0])
            labels = torch.empty(n_pos, dtype=torch.long, device=self.device)
            dist.recv(labels, source)
            return z, shortcut, labels, n_pos

        return self._blocking("waiting for the stage below", receive)

    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None = None) -> list[LocalResult | None]:
        """This rank's learners' update on batch (x, y); the stages above stage 0 take their inputs from below."""
        model = self.model
        if self.stage == 0:
            rows, labels, n_pos = self._my_rows(self.make_pairs(x, y, idx=idx), y)
            z, shortcut = model.prepare(rows), None
        else:
            z, shortcut, labels, n_pos = self._receive_state()
        results: list[LocalResult] = []

        def visit(i: int, h: torch.Tensor) -> None:
            loss, g = model.layers[i].local_loss(h, n_pos, labels)
            results.append(LocalResult(loss, g.detach()))

        z, shortcut = model.run(z, self.active, visit, shortcut, grad=self.active)
        if self.stage + 1 < self.plan.stages:
            self._send_state(z, shortcut, labels, n_pos)
        if self.plan.replicas > 1:  # each replica's share of the whole batch's loss (see DistributedFFTrainer)
            share = n_pos / len(y)
            results = [LocalResult(r.loss * share, r.goodness * share) for r in results]
        self.update(results)
        return self.by_slot(results)
