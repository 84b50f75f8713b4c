"""Recurrent wiring of FF learners (Hinton 2022, Fig. 3): a static image or a sequence treated as a video.

Every hidden layer is updated synchronously at each time step from the previous step's activity of
the layer below (bottom-up; the input frame for the first layer), the layer above (top-down; the
one-hot label for the top layer) and itself (lateral). Each source is normalised to unit RMS first.

  new = d * old + (1 - d) * computed          (damping; the paper: d = 0.3)

During the first `hidden_steps` steps the label is neutral (1/C everywhere) and nothing is damped;
then the true label (positive data) or a wrong one (negative data) is clamped. Goodness counts only
in a window of steps (the paper: steps 3 to 5 of 8). Learning stays local: every input to a layer
at step t is a detached activity from step t - 1, so a layer's loss reaches only its own weights,
and no gradient runs back through time.

Options the public recurrent FF codes need (configs/reference/): the label written into the input instead of
clamped at the top (`embedding`, Nicola97), sources scaled to unit length or not at all (`source_norm`), the
input and label unscaled (`raw_input`, and-rewsmith), learning at other steps than prediction counts
(`learn_window`), several optimiser steps per learning step (`updates_per_step`), the activity passed on
recomputed after a step (`recompute_after_update`), prediction updating the layers in turn (`predict_order`)
and weighting its steps (`window_weights`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fflab.batching import in_batches
from fflab.layers.recurrent import RecurrentLayer, normalize_source, rms_normalize
from fflab.models.feedforward import LocalResult
from fflab.models.prediction import Predictions
from fflab.models.readout import LinearReadout
from fflab.supervision import LabelEmbedding
from fflab.vocab import PREDICT_ORDERS, SCORES, SOURCE_NORMS


@dataclass
class Dynamics:
    """Recorded states of a run: goodness [T, L, rows] and, if asked, activities per step and layer."""

    goodness: torch.Tensor
    activities: list[list[torch.Tensor]] | None = None


class RecurrentFFNetwork(nn.Module):
    """Recurrent stack of FF learners with the label clamped at the top."""

    kind = "recurrent"  # its family (fflab.families); spiking layers make it "spiking-recurrent"

    def __init__(
        self,
        layers: Sequence[RecurrentLayer],
        input_dim: int,
        num_classes: int,
        *,
        steps: int = 8,
        damping: float = 0.3,
        window: tuple[int, int] = (3, 5),
        hidden_steps: int = 0,
        clock: bool = False,
        score: str = "steps",
        readout: LinearReadout | None = None,
        embedding: LabelEmbedding | None = None,
        source_norm: str = "rms",
        raw_input: bool = False,
        learn_window: tuple[int, int] | None = None,
        updates_per_step: int = 1,
        recompute_after_update: bool = False,
        predict_order: str = "synchronous",
        window_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        learn_window = tuple(learn_window or window)
        if not 1 <= window[0] <= window[1] <= steps:
            raise ValueError(f"window {window} must satisfy 1 <= first <= last <= steps ({steps})")
        if hidden_steps >= window[0]:
            raise ValueError(
                f"the label must be visible in the counted window: hidden_steps {hidden_steps} < {window[0]}"
            )
        if not hidden_steps < learn_window[0] <= learn_window[1] <= steps:
            raise ValueError(f"learn window {learn_window}: hidden_steps ({hidden_steps}) < first <= last <= {steps}")
        if source_norm not in SOURCE_NORMS:
            raise ValueError(f"unknown source norm {source_norm!r}; expected one of {list(SOURCE_NORMS)}")
        if predict_order not in PREDICT_ORDERS:
            raise ValueError(f"unknown prediction order {predict_order!r}; expected one of {list(PREDICT_ORDERS)}")
        if window_weights and len(window_weights) != window[1] - window[0] + 1:
            raise ValueError(f"window_weights: one weight per counted step {tuple(window)}, got {window_weights}")
        self.layers = nn.ModuleList(layers)
        self.input_dim, self.num_classes = input_dim, num_classes
        self.steps, self.damping, self.window, self.hidden_steps = steps, damping, tuple(window), hidden_steps
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; expected one of {list(SCORES)}")
        if window_weights and score != "steps":
            raise ValueError("window_weights weigh each counted step's goodness: they need score 'steps'")
        self.clock, self.score = clock, score
        self.readout = readout
        self.embedding = embedding  # the label written into the input (None: clamped above the top layer)
        self.source_norm, self.raw_input = source_norm, raw_input
        self.learn_window, self.updates_per_step = learn_window, updates_per_step
        self.recompute_after_update, self.predict_order = recompute_after_update, predict_order
        self.window_weights = list(window_weights) if window_weights else None

    # --- the dynamics -------------------------------------------------------------------------
    def frame(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Input frame at step t (1-based): a static input repeats; a sequence [B, T, D] runs out to zeros.

        With `clock`, a one-hot code of t is appended: the network is told which step it is at (which a
        sequence's frames do not say, e.g. which row of an image arrives), so its units can respond to
        "this content at this time".
        """
        if x.dim() == 3:
            frame = x[:, t - 1] if t <= x.shape[1] else x.new_zeros(x.shape[0], x.shape[2])
        else:
            frame = x.flatten(1)
        if self.clock:
            tick = frame.new_zeros(frame.shape[0], self.steps)
            tick[:, t - 1] = 1.0
            frame = torch.cat([frame, tick], 1)
        return frame

    def normalize(self, v: torch.Tensor) -> torch.Tensor:
        """A source scaled as `source_norm` says (unit RMS by default)."""
        return rms_normalize(v) if self.source_norm == "rms" else normalize_source(v, self.source_norm)

    def label_input(self, labels: torch.Tensor | None, rows: int, t: int, device) -> torch.Tensor:
        """Normalised top-down input of the top layer at step t: neutral while hidden (or if no labels); unscaled
        with `raw_input` (a one-hot, 1/C everywhere when neutral); nothing (width 0) when the label enters with
        the input."""
        if self.embedding is not None:
            return torch.zeros(rows, 0, device=device)
        if labels is None or t <= self.hidden_steps:
            if self.source_norm == "rms" and not self.raw_input:
                return torch.ones(rows, self.num_classes, device=device)  # rms_normalize(uniform 1/C)
            uniform = torch.full((rows, self.num_classes), 1.0 / self.num_classes, device=device)
            return uniform if self.raw_input else self.normalize(uniform)
        one_hot = torch.zeros(rows, self.num_classes, device=device)
        one_hot[torch.arange(rows, device=device), labels] = 1.0
        return one_hot if self.raw_input else self.normalize(one_hot)

    def input_frame(self, x: torch.Tensor, labels: torch.Tensor | None, t: int, repeats: int = 1) -> torch.Tensor:
        """The first layer's bottom-up input at step t, scaled (unless `raw_input`), each row of `x` repeated
        `repeats` times; with an `embedding`, the rows' labels written in (neutral while hidden)."""
        frame = self.frame(x, t)
        if self.embedding is not None:
            frame = frame.repeat_interleave(repeats, 0) if repeats > 1 else frame
            hidden = labels is None or t <= self.hidden_steps
            frame = self.embedding.neutral(frame) if hidden else self.embedding.embed(frame, labels)
            return frame if self.raw_input else self.normalize(frame)
        u = frame if self.raw_input else self.normalize(frame)
        return u.repeat_interleave(repeats, 0) if repeats > 1 else u

    def initial_state(self, rows: int, device) -> list[torch.Tensor]:
        return [torch.zeros(rows, layer.width, device=device) for layer in self.layers]

    def advance(
        self,
        state: list[torch.Tensor],
        x: torch.Tensor,
        labels: torch.Tensor | None,
        t: int,
        static_up: torch.Tensor | None = None,
        repeats: int = 1,
        in_turn: bool = False,
        mems: list | None = None,
        repeat: int = 1,
    ) -> list[torch.Tensor]:
        """One synchronous update of every layer from the (detached) previous state; each row of `x` feeds
        `repeats` consecutive state rows. `in_turn`: each layer takes the new activity of the layer below (the
        order of Nicola97's predict). `mems` (one entry per layer, filled in here) carries a "populations"
        layer's membranes from one of a step's `updates_per_step` iterations to the next (`repeat`, 1-based)."""
        prev = [self.normalize(layer.emit(h.detach())) for layer, h in zip(self.layers, state, strict=True)]
        rows = prev[0].shape[0]
        u_frame = None
        if static_up is None:
            u_frame = self.input_frame(x, labels, t, repeats)
        top = self.label_input(labels, rows, t, prev[0].device)
        new = []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i == 0:
                u_up = u_frame
            else:
                u_up = self.normalize(self.layers[i - 1].emit(new[i - 1].detach())) if in_turn else prev[i - 1]
            u_down = top if i == last else prev[i + 1]
            up_term = static_up if i == 0 else None
            if mems is not None and layer.wiring == "populations":
                signed = layer.top_down_sign * u_down
                computed, mems[i] = layer.populations(u_up, signed, prev[i], up_term, mems[i], repeat)
            else:
                computed = layer(u_up, u_down, prev[i], up_term=up_term)
            if t > self.hidden_steps and self.damping > 0:
                computed = self.damping * layer.settle(state[i].detach()) + (1 - self.damping) * computed
            new.append(computed)
        return new

    def static_up(self, x: torch.Tensor) -> torch.Tensor | None:
        """First-layer bottom-up term of a static input, the same at every step (None for sequences, or
        with a clock, whose input changes every step, or with the label in the input)."""
        if x.dim() == 3 or self.clock or self.embedding is not None:
            return None
        frame = x.flatten(1)
        return self.layers[0].bottom_up(frame if self.raw_input else self.normalize(frame))

    def run(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None,
        *,
        until: int | None = None,
        on_step: Callable[[int, list[torch.Tensor]], None] | None = None,
        static_up: torch.Tensor | None = None,
        state: list[torch.Tensor] | None = None,
        start: int = 1,
        repeats: int = 1,
        in_turn: bool = False,
    ) -> list[torch.Tensor]:
        """Run steps start..until (default: the window's end) and return the final state.

        `on_step(t, activities)` sees every step's new activities (with their graphs, for local losses; for
        spiking layers the spikes, while the returned state holds membrane potentials).
        `static_up` is a precomputed first-layer bottom-up term for a static input. With `repeats` > 1 every
        row of `x` drives that many consecutive state rows (one per candidate label), so a sequence batch
        is never copied whole for each label: only the current frame is repeated. `in_turn`: see `advance`.
        """
        until = self.window[1] if until is None else until
        rows = x.shape[0] * repeats
        state = state if state is not None else self.initial_state(rows, x.device)
        for t in range(start, until + 1):
            state = self.advance(state, x, labels, t, static_up, repeats, in_turn)
            if on_step is not None:
                on_step(t, [layer.emit(h) for layer, h in zip(self.layers, state, strict=True)])
        return state

    # --- learning -------------------------------------------------------------------------------
    def local_losses(
        self,
        x: torch.Tensor,
        pos_labels: torch.Tensor,
        neg_labels: torch.Tensor,
        update: Callable[[list[LocalResult]], None] | None = None,
    ) -> list[LocalResult]:
        """Each layer's own loss over the learning window (`learn_window`, by default the counted window): rows
        are x with its positive labels, then x with its negative labels.

        Without `update`, there is one update per sample: losses are averaged over the window (or, with
        score "window_mean", taken once of the window-averaged activity), and the first layer's
        bottom-up term of a static input is computed once for both halves. With it,
        `update(results)` is called at every step of the window (one update per time step; see
        `_learn_by_steps`) and that term is recomputed each step, because the weights change in between.
        """
        if update is not None and self.score == "window_mean":
            raise ValueError("score 'window_mean' scores the whole window at once: per-step updates do not apply")
        n = x.shape[0]
        rows = torch.cat([x, x])
        labels = torch.cat([pos_labels, neg_labels])
        if update is not None:
            return self._learn_by_steps(x, labels, update)
        up = self.static_up(x)
        first, last = self.learn_window
        losses: list[list[torch.Tensor]] = [[] for _ in self.layers]
        goods: list[list[torch.Tensor]] = [[] for _ in self.layers]
        sums: list[torch.Tensor | int] = [0] * len(self.layers)

        def on_step(t: int, state: list[torch.Tensor]) -> None:
            if t < first:
                return
            if self.score == "window_mean":  # scored once the window is over
                for i, h in enumerate(state):
                    sums[i] = sums[i] + h
                return
            results = [LocalResult(*layer.local_loss(h, n)) for layer, h in zip(self.layers, state, strict=True)]
            for i, r in enumerate(results):
                losses[i].append(r.loss)
                goods[i].append(r.goodness.detach())

        shared = self.shared_hidden_steps()
        state = self.hidden_state_of_pairs(x, shared, static_up=up) if shared else None
        up = None if up is None else torch.cat([up, up])
        self.run(rows, labels, until=last, on_step=on_step, static_up=up, state=state, start=shared + 1)
        if self.score == "window_mean":
            count = last - first + 1
            return [LocalResult(*layer.local_loss(h / count, n)) for layer, h in zip(self.layers, sums, strict=True)]
        return [
            LocalResult(torch.stack(ls).mean(), torch.stack(gs).mean(0)) for ls, gs in zip(losses, goods, strict=True)
        ]

    def shared_hidden_steps(self) -> int:
        """How many first steps of a training run its positive and negative rows share: the label-hidden steps
        before the learning window, which see the same input and no label, so both halves are equal there."""
        return min(self.hidden_steps, self.learn_window[0] - 1)

    @torch.no_grad()
    def hidden_state_of_pairs(
        self, x: torch.Tensor, until: int, static_up: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """The state after steps 1..until (label hidden, no loss taken) of the rows [x, x], run once on x: what
        the positive and negative halves would each compute. No gradient is kept: the next step detaches it."""
        return [torch.cat([h, h]) for h in self.run(x, None, until=until, static_up=static_up)]

    def _learn_by_steps(
        self, x: torch.Tensor, labels: torch.Tensor, update: Callable[[list[LocalResult]], None]
    ) -> list[LocalResult]:
        """One update per step of the learning window: at each, every layer computes its new activity from the
        previous step's, takes its loss, and `update(results)` steps the optimisers; `updates_per_step` times on
        the same inputs, a "populations" layer's membranes integrating over those iterations. The step then
        passes on the activity of its last iteration, or with `recompute_after_update` that activity computed
        again with the updated weights. Returns each layer's loss and goodness averaged over its updates."""
        first, last = self.learn_window
        n, rows = x.shape[0], torch.cat([x, x])
        losses: list[list[torch.Tensor]] = [[] for _ in self.layers]
        goods: list[list[torch.Tensor]] = [[] for _ in self.layers]
        shared = self.shared_hidden_steps()
        state = self.hidden_state_of_pairs(x, shared) if shared else self.initial_state(rows.shape[0], rows.device)
        for t in range(shared + 1, last + 1):
            if t < first:
                state = self.advance(state, rows, labels, t)
                continue
            mems: list = [None] * len(self.layers)
            for k in range(1, self.updates_per_step + 1):
                new = self.advance(state, rows, labels, t, mems=mems, repeat=k)
                emitted = [layer.emit(h) for layer, h in zip(self.layers, new, strict=True)]
                results = [LocalResult(*layer.local_loss(h, n)) for layer, h in zip(self.layers, emitted, strict=True)]
                update(results)
                for i, r in enumerate(results):
                    losses[i].append(r.loss.detach())
                    goods[i].append(r.goodness.detach())
            if self.recompute_after_update:
                with torch.no_grad():
                    new = self.advance(state, rows, labels, t)
            state = new
        return [
            LocalResult(torch.stack(ls).mean(), torch.stack(gs).mean(0)) for ls, gs in zip(losses, goods, strict=True)
        ]

    # --- prediction -----------------------------------------------------------------------------
    @torch.no_grad()
    def label_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Positive-signed goodness over the window (see `score`; `window_weights` weigh its steps, else their
        mean), per candidate label and layer: [N, C, L].

        The label-hidden steps do not depend on the label, so they run once; then all C candidates
        run as one batch of N * C rows.
        """
        n, c = x.shape[0], self.num_classes
        up = self.static_up(x)
        in_turn = self.predict_order == "in_turn"
        state = self.run(x, None, until=self.hidden_steps, static_up=up, in_turn=in_turn)
        state = [h.repeat_interleave(c, 0) for h in state]
        labels = torch.arange(c, device=x.device).repeat(n)
        first, last = self.window
        count = last - first + 1
        weights = self.window_weights or [1.0 / count] * count
        total = torch.zeros(len(self.layers), n * c, device=x.device)
        sums: list[torch.Tensor | int] = [0] * len(self.layers)

        def on_step(t: int, s: list[torch.Tensor]) -> None:
            if t < first:
                return
            for i, (layer, h) in enumerate(zip(self.layers, s, strict=True)):
                if self.score == "window_mean":
                    sums[i] = sums[i] + h
                elif self.window_weights is None:
                    total[i] += layer.positive_score(layer.goodness(h)) / count
                else:
                    total[i] += weights[t - first] * layer.positive_score(layer.goodness(h))

        up = None if up is None else up.repeat_interleave(c, 0)
        start = self.hidden_steps + 1
        self.run(x, labels, on_step=on_step, static_up=up, state=state, start=start, repeats=c, in_turn=in_turn)
        if self.score == "window_mean":
            for i, layer in enumerate(self.layers):
                total[i] = layer.positive_score(layer.goodness(sums[i] / count))
        return total.t().reshape(n, c, len(self.layers))

    def window_means(self, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """Each chosen layer's activity averaged over the counted window, with a neutral label throughout."""
        first, last = self.window
        sums = [None] * len(self.layers)

        def on_step(t: int, s: list[torch.Tensor]) -> None:
            if t >= first:
                for i in layers:
                    sums[i] = s[i] if sums[i] is None else sums[i] + s[i]

        self.run(x, None, on_step=on_step, static_up=self.static_up(x))
        return [sums[i] / (last - first + 1) for i in layers]

    @torch.no_grad()
    def readout_features(self, x: torch.Tensor) -> torch.Tensor:
        """Window-averaged activity of the readout's layers, each at unit RMS, concatenated: what the
        linear readout (and hard negatives) use."""
        return torch.cat([rms_normalize(h) for h in self.window_means(x, self.readout.layers)], 1)

    @torch.no_grad()
    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """Window-averaged activity of every layer (neutral label), concatenated [N, sum H]."""
        return torch.cat(self.window_means(x, list(range(len(self.layers)))), 1)

    @torch.no_grad()
    def trace(self, x: torch.Tensor, labels: torch.Tensor | None, keep_activities: bool = False) -> Dynamics:
        """Goodness of every layer at every step (and optionally the activities), for plots."""
        goods, acts = [], []

        def on_step(t: int, s: list[torch.Tensor]) -> None:
            goods.append(torch.stack([layer.goodness(h) for layer, h in zip(self.layers, s, strict=True)]))
            if keep_activities:
                acts.append([h.clone() for h in s])

        self.run(x, labels, until=self.steps, on_step=on_step, static_up=self.static_up(x))
        return Dynamics(torch.stack(goods), acts if keep_activities else None)

    def forward_flops(self) -> int:
        """Matrix-multiply FLOPs of running one input row up to the window's end."""
        return self.window[1] * sum(layer.flops() for layer in self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-class scores [N, C]: the goodness of every candidate label, averaged over the counted window and
        the layers (argmax: the "goodness" prediction)."""
        return self.label_scores(x).mean(2)

    @torch.no_grad()
    def predictions(self, x: torch.Tensor, batch_size: int = 1000) -> Predictions:
        """Predicted labels by goodness averaged over window and layers ("goodness", and each layer alone),
        by the linear readout ("readout") when there is one, and by both ("goodness+readout"): the sum of the
        two log-softmaxes, the goodness scaled by the loss's own logit scale, so each method's confidence
        weighs its vote."""
        self.eval()
        scores = in_batches(self.label_scores, x, max(1, batch_size // self.num_classes))
        mean_scores = scores.mean(2)
        by_method = {"goodness": mean_scores.argmax(1)}
        per_layer = [scores[:, :, j].argmax(1) for j in range(scores.shape[2])]
        if self.readout is not None:
            logits = in_batches(lambda b: self.readout(self.readout_features(b)), x, batch_size)
            by_method["readout"] = logits.argmax(1)
            goodness_logits = self.layers[0].logit_scale * mean_scores.float()
            by_method["goodness+readout"] = (goodness_logits.log_softmax(1) + logits.float().log_softmax(1)).argmax(1)
        return Predictions(by_method, per_layer)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """The label of best window-averaged goodness for each input (see `forward`), a chunk at a time."""
        return in_batches(self, x, max(1, batch_size // self.num_classes)).argmax(1)
