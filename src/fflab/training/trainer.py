"""One training loop for every network: epochs, shuffled batches, lr schedule, progress, statistics.

Subclasses supply what differs: one `step` on a batch, and the optimisers where learners do not
each get their own. The wiring returns one loss per learner; because every learner's input is
detached, backpropagating those losses together gives each learner the gradient of its own loss only
(tests check this), and each optimiser then steps its learner. BackpropTrainer trains the same
layers end to end, with one optimiser, for comparison.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fflab.batching import in_batches
from fflab.config import ReadoutSettings, TrainSettings
from fflab.layers.kept_cast import mark_parameters_changed
from fflab.models import FFNetwork, HebbianFFNetwork, LocalResult, RecurrentFFNetwork
from fflab.spiking.traces import trace_flops
from fflab.supervision import make_pair_source, wrong_labels
from fflab.training import cast_adam
from fflab.training.augment import augment_images
from fflab.training.health import CHECK_EVERY, check_statistics, check_weights
from fflab.training.progress import HEARTBEAT_SECONDS, EpochProgress
from fflab.training.readout import OnlineReadout


def make_optimizer(params, settings: TrainSettings, casts: dict | None = None) -> torch.optim.Optimizer:
    """The optimiser named in the settings, for one learner's parameters.

    The fused implementations are used: on CPU they are about 10x faster than the default
    per-tensor loops, which otherwise cost a fifth of a training step at batch 100. They write the parameters
    without moving autograd's version counters, so each step moves them itself: products that keep a cast of
    their weight (`KeptCast`) read the counter to know when the weight changed. Adam and AdamW in bfloat16
    also step the weights in `casts` (a layer's `kept_casts()`) from their bfloat16 gradients, writing their
    next bfloat16 copies as they go (`CastAdam`), where this machine can build its kernel.
    """
    for kept in (casts or {}).values():  # a CastAdam made before for these weights steps them no more
        kept.collect_gradient = False
    if settings.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay, fused=True
        )
    elif settings.optimizer == "rmsprop":  # torch's defaults (alpha 0.99, eps 1e-8, no momentum); no fused form
        optimizer = torch.optim.RMSprop(params, lr=settings.lr, weight_decay=settings.weight_decay)
    else:
        options = {"lr": settings.lr, "weight_decay": settings.weight_decay}
        options["decoupled_weight_decay"] = settings.optimizer == "adamw"
        if steps_with_cast_adam(settings, casts) and cast_adam.kernel() is not None:
            return cast_adam.CastAdam(params, casts, **options)  # moves the version counters itself
        optimizer = torch.optim.Adam(params, fused=True, **options)
    optimizer.register_step_post_hook(mark_parameters_changed)
    return optimizer


def steps_with_cast_adam(settings: TrainSettings, casts: dict | None) -> bool:
    """Whether `make_optimizer` steps these kept casts' weights with CastAdam where its kernel can be built:
    Adam or AdamW, bfloat16, CPU weights."""
    cpu = bool(casts) and all(p.device.type == "cpu" for p in casts)
    return cpu and settings.optimizer in ("adam", "adamw") and settings.precision == "bfloat16"


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each of an epoch's batches of n rows. A last batch of one row joins the batch before it
    (one row cannot be paired with another for hybrid negatives, or normalised by batch statistics), unless
    every batch is one row (online learning)."""
    starts = list(range(0, n, batch_size))
    if batch_size > 1 and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return list(zip(starts, [*starts[1:], n], strict=True))


def lr_factor(schedule: str, progress: float, epochs: int = 1) -> float:
    """Multiplier of the base learning rate at `progress` in [0, 1) of training, `epochs` long.

    hinton: constant for the first half, then linear decay to zero (Hinton 2022);
    cooldown_per_epoch: constant up to epoch E // 2, then 2 (1 + E - e) / E in epoch e (0-based, E epochs), a
    step down each epoch to 4 / E in the last (loeweX's get_linear_cooldown_lr).
    """
    if schedule == "cooldown_per_epoch":
        epoch = min(int(progress * epochs + 1e-9), epochs - 1)
        return 2.0 * (1 + epochs - epoch) / epochs if epoch > epochs // 2 else 1.0
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "hinton":
        return min(1.0, 2.0 * (1.0 - progress))
    return 1.0


@dataclass
class EpochStats:
    """What one epoch of training measured; lists hold one entry per layer (None: layer not trained)."""

    epoch: int
    loss: list[float | None]
    goodness_pos: list[float | None]
    goodness_neg: list[float | None]
    lr: float
    train_seconds: float
    samples_per_second: float
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        return {**d, **self.extra}


def require_state_shapes(opt: torch.optim.Optimizer) -> None:
    """ValueError unless every per-parameter tensor of the optimiser's state has its parameter's shape: torch
    loads a state of other shapes without complaint (e.g. one saved for the dense layout of locally connected
    weights, before fflab tiled them) and fails later, deep inside a step."""
    for group in opt.param_groups:
        for param in group["params"]:
            for name, value in opt.state.get(param, {}).items():
                if torch.is_tensor(value) and value.dim() and value.shape != param.shape:
                    raise ValueError(
                        f"the optimiser's {name!r} for a {tuple(param.shape)} parameter is {tuple(value.shape)}: "
                        "the state was saved for another layout of the weights (another fflab version?)"
                    )


class Trainer(abc.ABC):
    """The shared loop. Subclasses implement `step` and `flops_per_sample`, and `make_optimizers` where
    learners do not each get their own optimiser."""

    n_slots = 1  # entries per stats list (layers for FF, 1 for backprop)
    check_every = CHECK_EVERY  # steps between health checks within an epoch (0: at its end only)
    online_readout: OnlineReadout | None = None  # set where a readout learning alongside ranks hard negatives
    heartbeat_seconds = HEARTBEAT_SECONDS  # away from a terminal, seconds between an epoch's progress lines

    def __init__(self, model, settings: TrainSettings, *, progress: bool = True) -> None:
        self.model = model
        self.settings = settings
        self.progress = progress
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.optimizers = self.make_optimizers()
        self.phase_steps = 0  # steps taken in the current schedule phase (the lr schedule's clock)
        self.lr = settings.lr  # the scheduled learning rate of the current step

    def make_optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimisers this trainer steps: by default one per learner, as local learning has it."""
        layers = self.model.layers
        return [make_optimizer(layer.parameters(), self.settings, self.kept_casts(layer)) for layer in layers]

    def kept_casts(self, layer) -> dict:
        """The weights of `layer` whose optimiser may step them from their kept casts' gradients (`CastAdam`),
        which then never reach the weights' `.grad`."""
        return layer.kept_casts() if hasattr(layer, "kept_casts") else {}

    @abc.abstractmethod
    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> list[LocalResult | None]:
        """Update on one batch; one result per stats slot (None for a slot not trained)."""

    @abc.abstractmethod
    def flops_per_sample(self) -> int:
        """Matrix-multiply FLOPs of training on one sample (for GFLOP/s figures)."""

    def start_epoch(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> None:  # noqa: B027 (optional hook)
        """Hook before each epoch (e.g. refreshing model-generated negatives); nothing by default."""

    def batch_inputs(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The batch's inputs, augmented when the settings ask for it."""
        s = self.settings
        if s.augment_crop or s.augment_flip or s.augment_mask:
            return augment_images(x[idx], s.augment_crop, s.augment_flip, self.generator, s.augment_mask)
        return x[idx]

    def state_dict(self) -> dict:
        """What resuming needs besides the model's weights: the optimisers' state, the random streams and the
        lr schedule's clock, so that a resumed run continues exactly as if it had not stopped."""
        state = {
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "phase_steps": self.phase_steps,
            "optimizers": [opt.state_dict() for opt in self.optimizers],
        }
        if self.online_readout is not None:
            state["readout_optimizer"] = self.online_readout.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if len(state["optimizers"]) != len(self.optimizers):
            raise ValueError(
                f"the state holds {len(state['optimizers'])} optimisers, this trainer has {len(self.optimizers)}"
            )
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.phase_steps = state["phase_steps"]
        for opt, saved in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(saved)
            require_state_shapes(opt)
        if self.online_readout is not None:
            self.online_readout.optimizer.load_state_dict(state["readout_optimizer"])

    def _set_lr(self, progress: float) -> float:
        lr = self.lr = self.settings.lr * lr_factor(self.settings.lr_decay, progress, self.settings.epochs)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        if self.online_readout is not None:
            self.online_readout.set_lr(progress, self.settings.epochs)
        return lr

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, epoch: int, total_epochs: int | None = None) -> EpochStats:
        """One pass over (x, y) in a fresh random order (`total_epochs` only labels the progress bar)."""
        self.model.train()
        self.start_epoch(x, y, epoch)
        n = len(x)
        bounds = batch_bounds(n, self.settings.batch_size)
        steps_per_epoch = len(bounds)
        phase_total = steps_per_epoch * self.settings.epochs
        order = torch.randperm(n, generator=self.generator) if self.settings.shuffle else torch.arange(n)
        sums = torch.zeros(3, self.n_slots, dtype=torch.float64)
        trained = [False] * self.n_slots
        progress = EpochProgress(
            steps_per_epoch,
            f"epoch {epoch}/{total_epochs or self.settings.epochs}",
            enabled=self.progress,
            every=self.heartbeat_seconds,
        )
        start = time.perf_counter()
        lr = self.settings.lr
        for i in progress:
            lr = self._set_lr(self.phase_steps / phase_total)
            first, stop = bounds[i]
            idx = order[first:stop]
            results = self.step(self.batch_inputs(x, idx), y[idx], idx)
            self.phase_steps += 1
            k = len(idx)
            for j, r in enumerate(results):
                if r is None:
                    continue
                trained[j] = True
                sums[0, j] += r.loss.item() * k
                if r.goodness is not None:  # positive rows, then as many negative (or other-class) rows
                    half = len(r.goodness) // 2
                    sums[1, j] += r.goodness[:half].mean().item() * k
                    sums[2, j] += r.goodness[half:].mean().item() * k
            if i % 50 == 0 and any(trained):
                done = sums[0, torch.tensor(trained)].mean().item() / stop
                progress.show_loss(done)
            if self.check_every and (i + 1) % self.check_every == 0 and i + 1 < steps_per_epoch:
                self.check_health(sums / stop, epoch, f" (checked after step {i + 1} of {steps_per_epoch})")
        sums, done_slots = self.combine_epoch_sums(sums, torch.tensor(trained))  # waits for all workers' steps
        seconds = time.perf_counter() - start
        means = [
            [v if t else None for v, t in zip(row, done_slots.tolist(), strict=True)] for row in (sums / n).tolist()
        ]
        stats = EpochStats(epoch, means[0], means[1], means[2], lr, seconds, n / seconds)
        self.end_epoch(stats)
        self.check_health(sums / n, epoch)
        return stats

    def check_health(self, means: torch.Tensor, epoch: int, where: str = "") -> None:
        """DivergedError if a layer's mean loss or goodness so far [3, slots] (already on the host: each step's
        values are, for the statistics) or a weight of the model is not finite or has run away
        (fflab.training.health); the epoch's statistics are then never seen and its state never saved."""
        check_statistics(means, epoch, where, self.slot_name)
        check_weights(self.model, epoch, where)

    def slot_name(self, j: int) -> str:
        """Who statistics slot j is, in messages."""
        return f"layer {j}"

    def combine_epoch_sums(self, sums: torch.Tensor, trained: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hook for trainers that share an epoch's work: the loss and goodness sums [3, slots] and the
        trained slots, combined with the other workers' (here: as they are)."""
        return sums, trained

    def end_epoch(self, stats: EpochStats) -> None:  # noqa: B027 (optional hook)
        """Hook after an epoch's statistics are complete, before anyone sees them; nothing by default."""

    def fit(
        self, x: torch.Tensor, y: torch.Tensor, on_epoch: Callable[[EpochStats], None] | None = None, done: int = 0
    ) -> list[EpochStats]:
        """Train for settings.epochs epochs, the first `done` of which ran before (a resumed run, its
        state loaded); `on_epoch` sees each epoch's stats as they arrive."""
        return self._run_phase(x, y, 0, self.settings.epochs, on_epoch, done)

    def _run_phase(self, x, y, first_epoch: int, total_epochs: int, on_epoch, done: int = 0) -> list[EpochStats]:
        """Epochs done+1..settings.epochs of one schedule phase (its lr clock restarts unless resumed mid-phase)."""
        if not done:
            self.phase_steps = 0
        history = []
        for e in range(done + 1, self.settings.epochs + 1):
            stats = self.train_epoch(x, y, first_epoch + e, total_epochs)
            if on_epoch is not None:
                on_epoch(stats)
            history.append(stats)
        return history


class FFTrainer(Trainer):
    """Trains an FFNetwork's learners with local updates.

    schedule "simultaneous": every learner is updated on every mini-batch (default);
    schedule "greedy": learner 0 is trained for all epochs, then learner 1 on the frozen learner 0,
    and so on (the minimal public implementation's way).
    layer_order "together": every trained layer's loss comes from one forward pass, then each steps (default);
    "in_turn": each layer steps before the layer above sees its output, recomputed with its new weights.
    fixed_negatives: each training image's negative label is drawn once (`fixed_wrong`) and kept.
    """

    def __init__(
        self,
        model: FFNetwork,
        settings: TrainSettings,
        *,
        progress: bool = True,
        image_shape: Sequence[int] | None = None,
        readout: ReadoutSettings | None = None,
    ) -> None:
        super().__init__(model, settings, progress=progress)
        self.n_slots = len(model.layers)
        if settings.negatives == "hybrid" and image_shape is None:
            raise ValueError("hybrid negatives need the image shape (C, H, W)")
        self.pairs = make_pair_source(model.embedding, tuple(image_shape or ()), settings)
        self.active: list[int] | None = None  # layers trained now; None: all
        self.score_bank: torch.Tensor | None = None  # [N, C] label scores of the training set
        self.fixed_wrong: torch.Tensor | None = None  # [N] each training image's negative label (fixed_negatives)
        online = readout is not None and readout.enabled and readout.online
        if online or (self.pairs.needs_scores and settings.hard_scores == "readout"):
            self.online_readout = OnlineReadout(model, readout, settings.lr)

    def label_scores_for(
        self, x: torch.Tensor, idx: torch.Tensor | None, y: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Scores ranking the wrong labels of a batch, from where the settings say (None if not needed).

        `idx` (the batch's rows of the training set) is given during training only; then the online
        readout, if it makes the scores, also takes its step on the batch's labels `y`.
        """
        if not self.pairs.needs_scores:
            return None
        if self.online_readout is not None:
            return self.online_readout.step(x, y) if idx is not None else self.online_readout.scores(x)
        if self.settings.hard_scores == "refreshed":
            if idx is not None and self.score_bank is not None:
                return self.score_bank[idx]
            return self.score_bank_for(x)  # outside training (e.g. pairs for plots): what the bank would hold now
        return self.model.hard_negative_scorer(self.settings.hard_scores)(x)

    def refresh_due(self, epoch: int) -> bool:
        """Whether the bank of model-generated label scores is refreshed before this epoch."""
        refreshed = self.pairs.needs_scores and self.settings.hard_scores == "refreshed"
        return refreshed and (epoch - 1) % self.settings.refresh_every == 0

    def score_bank_for(self, x: torch.Tensor) -> torch.Tensor:
        """The whole network's label scores [N, C] for x (in eval mode, a thousand rows at a time)."""
        return in_batches(self.model.hard_negative_scorer("prediction"), x)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "score_bank": self.score_bank, "fixed_wrong": self.fixed_wrong}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.score_bank = state["score_bank"]
        self.fixed_wrong = state.get("fixed_wrong")  # absent from states saved before fixed negatives existed

    def start_epoch(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> None:
        """Freeze the layers whose training window (`layer_epochs`) has closed; refresh the bank of
        model-generated label scores every `refresh_every` epochs; draw the fixed negatives once."""
        if self.settings.layer_epochs:
            self.active = [k for k, last in enumerate(self.settings.layer_epochs) if epoch <= last]
        if self.refresh_due(epoch):
            self.score_bank = self.score_bank_for(x)
        if self.settings.fixed_negatives and self.fixed_wrong is None:
            self.fixed_wrong = self.pairs.wrong_labels(y, self.generator)

    def make_pairs(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None, idx=None
    ) -> torch.Tensor:
        """Positive rows then negative rows for (x, y), made as training makes them (a training batch, given
        its rows `idx`, takes its fixed negatives where they are drawn)."""
        if self.fixed_wrong is not None and idx is not None:
            return self.pairs.make(x, y, generator or self.generator, wrong=self.fixed_wrong[idx.to(y.device)])
        return self.pairs.make(x, y, generator or self.generator, self.label_scores_for(x, idx, y))

    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None = None) -> list[LocalResult | None]:
        """One local update of the active learners on the batch (x, y)."""
        if self.online_readout is not None and not self.pairs.needs_scores:  # learns alongside (readout.online)
            self.online_readout.step(x, y)
        both = self.make_pairs(x, y, idx=idx)
        if self.settings.layer_order == "in_turn":
            results = self.model.local_losses_in_turn(both, len(x), self.update_layer, self.active, y)
            return self.by_slot(results)
        results = self.model.local_losses(both, n_pos=len(x), layers=self.active, labels=y)
        self.update(results)
        return self.by_slot(results)

    def update_layer(self, i: int, result: LocalResult) -> None:
        """One optimiser step of layer i on its own loss (layer_order "in_turn")."""
        opt = self.optimizers[i]
        opt.zero_grad(set_to_none=True)
        result.loss.backward()
        opt.step()

    @property
    def trained_layers(self) -> list[int]:
        """The layers this trainer updates now (one per result of a step)."""
        return list(range(len(self.model.layers))) if self.active is None else list(self.active)

    def update(self, results: list[LocalResult]) -> None:
        """One optimiser step of each trained layer on its own loss."""
        opts = [self.optimizers[i] for i in self.trained_layers]
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        self.backward(results)
        for opt in opts:
            opt.step()

    def backward(self, results: list[LocalResult]) -> None:
        """Gradients of every trained layer's loss (inputs are detached, so each reaches its own layer only)."""
        torch.autograd.backward([r.loss for r in results])

    def by_slot(self, results: list[LocalResult]) -> list[LocalResult | None]:
        """The step's results placed in the statistics slots of their layers (None where not trained)."""
        out: list[LocalResult | None] = [None] * self.n_slots
        for i, r in zip(self.trained_layers, results, strict=True):
            out[i] = r
        return out

    def fit(self, x, y, on_epoch=None, done: int = 0) -> list[EpochStats]:
        try:
            if self.settings.schedule == "simultaneous":
                return super().fit(x, y, on_epoch, done)
            history = []
            n_layers, e = len(self.model.layers), self.settings.epochs
            for k in range(done // e, n_layers):
                self.active = [k]
                history += self._run_phase(x, y, k * e, n_layers * e, on_epoch, max(0, done - k * e))
            return history
        finally:
            self.active = None  # the greedy schedule and layer_epochs narrow it only while training

    def flops_per_sample(self) -> int:
        """Matrix-multiply FLOPs one training sample costs, averaged over the schedule: the local
        updates (4 forward passes' worth per trained layer: a forward and a weight-gradient product for
        each of the positive and negative rows; 2 without negatives) plus scoring labels for hard negatives
        (or running the online readout that scores them)."""
        dense = [layer.forward_flops() for layer in self.model.layers]
        rows = 1 if self.settings.negatives == "none" else 2
        n = len(dense)
        if self.settings.schedule == "greedy":  # equally long phases, one layer each
            phases = [[k] for k in range(n)]
        elif self.settings.layer_epochs:  # one phase per epoch
            windows = self.settings.layer_epochs
            phases = [[k for k, last in enumerate(windows) if e <= last] for e in range(1, self.settings.epochs + 1)]
        else:
            phases = [list(range(n))]
        # Trained layers cost a forward and a gradient product per row; frozen layers below them a forward.
        flops = sum(
            sum(2 * rows * dense[k] if k in trained else rows * dense[k] for k in range(max(trained) + 1))
            for trained in phases
        ) / len(phases)
        if self.settings.layer_order == "in_turn":  # a trained layer's output is recomputed after its step for the
            # layer above (the top trained layer feeds none)
            flops += sum(sum(rows * dense[k] for k in trained if k < max(trained)) for trained in phases) / len(phases)
        if self.online_readout is not None:  # a neutral-label pass, and the readout's forward and gradient
            readout = self.model.readout
            flops += sum(dense[: max(readout.layers) + 1]) + 2 * 2 * readout.linear.in_features * self.model.num_classes
        elif self.pairs.needs_scores and self.settings.hard_scores != "refreshed":
            depth = 1 if self.settings.hard_scores == "first_layer" else max(self.model.predict_layers) + 1
            flops += dense[0] + self.model.num_classes * sum(dense[1:depth])
        return int(flops)


class BackpropTrainer(Trainer):
    """End-to-end cross-entropy training of a BackpropNetwork, through the same loop."""

    def make_optimizers(self) -> list[torch.optim.Optimizer]:
        return [make_optimizer(self.model.parameters(), self.settings)]

    def slot_name(self, j: int) -> str:
        return "the network"

    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None = None) -> list[LocalResult | None]:
        (opt,) = self.optimizers
        loss = F.cross_entropy(self.model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return [LocalResult(loss.detach(), None)]

    def flops_per_sample(self) -> int:
        """Forward, input-gradient and weight-gradient products (the first layer needs no input gradient)."""
        return 3 * self.model.forward_flops() - self.model.layers[0].forward_flops()


class RecurrentTrainer(Trainer):
    """Local updates of a RecurrentFFNetwork's layers, with an online linear readout.

    Negative data are the same inputs with wrong labels: uniformly random, or "dynamic" hard ones
    sampled from the readout, a linear classifier trained alongside on the window-averaged activity
    of a neutral-label run (so it never sees the label it is asked about). `update` is "window" (one
    update per sample, from the goodness averaged over the window) or "step" (one per counted step).
    """

    def __init__(
        self,
        model: RecurrentFFNetwork,
        settings: TrainSettings,
        update: str = "window",
        *,
        progress: bool = True,
        readout: ReadoutSettings | None = None,
    ) -> None:
        super().__init__(model, settings, progress=progress)
        self.update_mode = update
        self.n_slots = len(model.layers)
        self.static_input = True
        if model.readout is not None:
            self.online_readout = OnlineReadout(model, readout, settings.lr)

    def wrong_labels(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Train the readout one step on this batch, then draw each sample's negative label."""
        scores = self.online_readout.step(x, y) if self.online_readout is not None else None
        s = self.settings
        return wrong_labels(s.negatives, y, self.model.num_classes, self.generator, scores, s.hard_temperature)

    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None = None) -> list[LocalResult | None]:
        self.static_input = x.dim() != 3 and not self.model.clock  # otherwise the first layer's input changes
        wrong = self.wrong_labels(x, y)
        opts = self.optimizers

        def update(results: list[LocalResult]) -> None:
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            torch.autograd.backward([r.loss for r in results])
            for opt in opts:
                opt.step()

        if self.update_mode == "step":
            return self.model.local_losses(x, y, wrong, update)
        results = self.model.local_losses(x, y, wrong)
        update(results)
        return results

    def flops_per_sample(self) -> int:
        """Matrix-multiply FLOPs per training sample: forward and weight-gradient products of its positive
        and negative runs up to the end of the learning window (`learn_window`; the label-hidden steps before it
        run once for both), plus the neutral run and the readout step.

        A static input's first-layer bottom-up product is the same at every step: it is computed (and
        its weight gradient taken) once for the pair of runs in window-update mode and once for the
        neutral run, so it is counted once there. With one update per step, each learning step runs
        `updates_per_step` forward and gradient products (and one more forward with
        `recompute_after_update`).
        """
        m = self.model
        per_step = sum(layer.flops() for layer in m.layers)
        first, last = m.learn_window
        learning = last - first + 1
        up = m.layers[0].up_flops() if self.static_input else 0
        shared = m.shared_hidden_steps()  # run once for both halves
        if self.update_mode == "window":
            flops = (2 * last - shared) * (per_step - up) + up + 2 * learning * (per_step - up) + up
        else:
            updates = learning * m.updates_per_step
            forwards = first - 1 + updates + (learning if m.recompute_after_update else 0)
            flops = (2 * forwards - shared) * per_step + 2 * updates * per_step
        if m.readout is not None:  # the neutral run goes to the end of the prediction window
            flops += m.window[1] * (per_step - up) + up + 2 * 2 * m.readout.linear.in_features * m.num_classes
        return int(flops)


class HebbianTrainer(Trainer):
    """Neo-Hebbian FF: every layer applies its own three-factor rule; no gradient.

    Negatives are the same images with wrong labels, uniformly random or hard. batch_size = 1 is the
    online mode; larger batches average the update over the batch. `present = "either"` shows each image once,
    with its label or, with probability 1/2, a wrong one (Hebbian_FFA), in place of both. With `optimizer`, each
    layer's update goes to its own train.optimizer as minus the gradient, in place of W += lr dW.
    """

    def __init__(
        self,
        model: HebbianFFNetwork,
        settings: TrainSettings,
        *,
        progress: bool = True,
        present: str = "both",
        optimizer: bool = False,
    ) -> None:
        self.use_optimizer = optimizer
        super().__init__(model, settings, progress=progress)
        self.n_slots = len(model.layers)
        self.present = present

    def make_optimizers(self) -> list[torch.optim.Optimizer]:
        if not self.use_optimizer:
            return []
        return [make_optimizer([layer.weight], self.settings) for layer in self.model.layers]

    def wrong_labels(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Uniformly random wrong labels, or hard ones ranked by the layers' summed P for every label
        (which costs a forward pass per label)."""
        s, gen = self.settings, self.generator
        scores = lambda: self.model.label_scores(x, gen).sum(2)  # noqa: E731 (drawn only for hard negatives)
        return wrong_labels(s.negatives, y, self.model.num_classes, gen, scores, s.hard_temperature)

    def state_dict(self) -> dict:
        """The shared state, plus the membranes LIF layers carry from one training sample to the next."""
        return {**super().state_dict(), "carried": [layer.carried for layer in self.model.layers]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        for layer, carried in zip(self.model.layers, state.get("carried", [None] * self.n_slots), strict=True):
            layer.carried = carried

    def apply(self, i: int, direction: torch.Tensor) -> None:
        """Layer i's update through its optimiser: the gradient is minus the update (eligibility trace first)."""
        weight = self.model.layers[i].weight
        weight.grad = -self.model.layers[i].through_eligibility(direction)
        self.optimizers[i].step()
        weight.grad = None

    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None = None) -> list[LocalResult | None]:
        apply = self.apply if self.use_optimizer else None
        if self.present == "both":
            return self.model.local_updates(x, y, self.wrong_labels(x, y), self.lr, self.generator, apply)
        wrong = self.wrong_labels(x, y)
        negative = torch.rand(len(x), generator=self.generator) < 0.5
        target = (~negative).to(x.dtype)
        results = self.model.learn(x, torch.where(negative, wrong, y), target, self.lr, self.generator, apply)
        # positives and negatives are mixed in the batch: no goodness per kind for the epoch's statistics
        return [LocalResult(r.loss, None) for r in results]

    def flops_per_sample(self) -> int:
        """Matrix-multiply FLOPs per training sample, as a step runs them, for the positive and negative runs (one
        of them, presenting either): with plasticity over the presentation, the input products of every step, the
        update's outer product over as many and, for spiking units, the traces' products over time; with online
        plasticity, the input products step by step and an outer product at each plastic step. Hard negatives add
        one run per candidate label (without the presynaptic trace)."""
        m = self.model
        rows = 2 if self.present == "both" else 1
        steps = m.steps + m.rest_steps
        scored_steps = steps if m.goodness_at == "mean" else m.steps  # label_scores leaves out unscored rest steps
        rest_products = m.rest_steps if m.online_rest == "run" else 0
        flops, scoring = 0, 0
        for layer in m.layers:
            product = layer.forward_flops(1)
            spiking = layer.lif is not None
            if m.plasticity == "online":
                flops += rows * (m.steps + rest_products + m.steps - m.learn_from) * product
            else:
                traces = trace_flops(steps, layer.in_features + layer.out_features, layer.trace_kind) if spiking else 0
                flops += rows * (2 * steps * product + traces)
            spike_trace = trace_flops(scored_steps, layer.out_features, layer.trace_kind) if spiking else 0
            scoring += scored_steps * product + spike_trace
        if self.settings.negatives != "random":
            flops += m.num_classes * scoring
        return int(flops)


def make_trainer(model, cfg, *, progress: bool = True, image_shape: Sequence[int] | None = None) -> Trainer:
    """The trainer that fits `model` under the settings of `cfg` (a Config), as the model's family makes it."""
    from fflab.families import family_of

    return family_of(model).make_trainer(model, cfg, progress=progress, image_shape=image_shape)
