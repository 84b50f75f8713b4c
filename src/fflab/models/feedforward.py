"""Feed-forward wiring: a chain of local learners (Hinton 2022, supervised and unsupervised FF)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fflab.batching import in_batches
from fflab.layers import FFDense, FFLearner, normalize_direction
from fflab.models.prediction import Predictions, predict_from_scores
from fflab.models.readout import LinearReadout
from fflab.supervision import LabelEmbedding


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Run `model` in eval mode (no dropout, batch norm's running statistics untouched), then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@dataclass
class LocalResult:
    """One learner's loss (with its graph) and its detached goodness for the batch."""

    loss: torch.Tensor
    goodness: torch.Tensor


def all_but_first(n_layers: int) -> list[int]:
    """The paper's default choice of layers for judging labels: skip the first (unless it is the only one)."""
    return list(range(1, n_layers)) if n_layers > 1 else [0]


class FFNetwork(nn.Module):
    """A stack of FF learners, each fed the detached activity of the one below.

    `kind` names its family (fflab.families): "ff", or "spiking" for LIF learners.

    Two ways to predict (Hinton 2022, section 3.3):
      goodness - write each candidate label into the input, run the stack, and pick the label
                 whose positive-signed goodness summed over `predict_layers` is best (for
                 channel-wise competitive learners: one pass, and each class's channel group's
                 goodness is that label's score);
      readout  - one pass with a neutral label, then a linear softmax on the normalised
                 activities of the readout's layers (the only way for unsupervised FF).
    """

    def __init__(
        self,
        layers: Sequence[FFLearner],
        embedding: LabelEmbedding,
        predict_layers: Sequence[int] | None = None,
        readout: LinearReadout | None = None,
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError("an FF network needs at least one layer")
        self.layers = nn.ModuleList(layers)
        self.embedding = embedding
        n = len(layers)
        chosen = list(predict_layers) if predict_layers else all_but_first(n)
        bad = [i for i in chosen + (readout.layers if readout else []) if not 0 <= i < n]
        if bad:
            raise ValueError(f"layers {bad} out of range for a network of {n} layers (0..{n - 1})")
        self.predict_layers = chosen
        self.readout = readout
        self.kind = "ff"

    @property
    def num_classes(self) -> int:
        return self.embedding.num_classes

    @property
    def competitive(self) -> bool:
        """Whether the learners score labels by class channel groups (no label input, no negatives)."""
        return self.layers[0].loss_name == "competitive"

    @property
    def predicts_by_goodness(self) -> bool:
        return self.embedding.has_label or self.competitive

    def forward_flops(self) -> int:
        """Matrix-multiply FLOPs of one forward pass of one input (2 per multiply-add).

        Training costs 4x this per sample: a positive and a negative row, each with a forward
        product and a weight-gradient product (inputs are detached, so no input gradient).
        """
        return sum(layer.forward_flops() for layer in self.layers)

    def activities(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's activity for embedded inputs `x`; no gradient crosses layers."""
        out = []
        h = x
        for layer in self.layers:
            h = layer(h.detach())
            out.append(h)
        return out

    def local_losses(
        self,
        x: torch.Tensor,
        n_pos: int,
        layers: Sequence[int] | None = None,
        labels: torch.Tensor | None = None,
    ) -> list[LocalResult]:
        """Each learner's own loss on a batch whose first `n_pos` rows are positive data (with
        `labels`, which competitive learners need).

        With `layers`, only those learners get a loss (the greedy schedule); the layers below them
        run without gradient and the layers above them do not run at all.
        """
        active = set(range(len(self.layers)) if layers is None else layers)
        results = []
        h = x
        for i, layer in enumerate(self.layers[: max(active) + 1]):
            if i in active:
                h = layer(h.detach())
                loss, g = layer.local_loss(h, n_pos, labels)
                results.append(LocalResult(loss, g.detach()))
            else:
                with torch.no_grad():
                    h = layer(h)
        return results

    def local_losses_in_turn(
        self,
        x: torch.Tensor,
        n_pos: int,
        update: Callable[[int, LocalResult], None],
        layers: Sequence[int] | None = None,
        labels: torch.Tensor | None = None,
    ) -> list[LocalResult]:
        """Like `local_losses`, but each trained learner takes its step (`update(i, result)`) before the learner
        above sees its output, which is then recomputed with the new weights: CheneyX2000's loop, which trains
        layer k on a sample and only then feeds the sample's positive and negative rows on through it."""
        active = set(range(len(self.layers)) if layers is None else layers)
        results = []
        h = x
        for i, layer in enumerate(self.layers[: max(active) + 1]):
            if i in active:
                out = layer(h.detach())
                loss, g = layer.local_loss(out, n_pos, labels)
                result = LocalResult(loss, g.detach())
                update(i, result)
                results.append(LocalResult(loss.detach(), result.goodness))
            if i < max(active):
                with torch.no_grad():
                    h = layer(h)
        return results

    @torch.no_grad()
    def label_scores(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Positive-signed goodness of the first `depth` layers (default all) for every label: [N, C, depth].

        All candidates run as one batch. A dense first layer shares its matrix product
        across candidates (see FFDense.forward_label_candidates), so depth=1 costs about one
        forward pass of the first layer.
        """
        emb = self.embedding
        depth = len(self.layers) if depth is None else depth
        if self.competitive:
            scores, h = [], x
            for layer in self.layers[:depth]:
                h = layer(h)
                scores.append(layer.class_goodness(h))
            return torch.stack(scores, 2)
        if not emb.has_label:
            raise ValueError("this network takes no label input (unsupervised); predict with its readout")
        n, c = x.shape[0], self.num_classes
        first = self.layers[0]
        blank = emb.blank(x)
        if isinstance(first, FFDense) and emb.shares_first_layer:
            if depth == 1:  # the goodness alone, without the [N, C, H] activity of every candidate
                goodness = first.label_candidate_goodness(blank, emb.label_offset, c, emb.value_for(x))
                return first.positive_score(goodness).view(n, c, 1)
            h = first.forward_label_candidates(blank, emb.label_offset, c, emb.value_for(x)).reshape(n * c, -1)
        else:
            labels = torch.arange(c, device=x.device).repeat(n)
            h = first(emb.embed(x.flatten(1).repeat_interleave(c, 0), labels))
        scores = [first.positive_score(first.goodness(h))]
        for layer in self.layers[1:depth]:
            h = layer(h)
            scores.append(layer.positive_score(layer.goodness(h)))
        return torch.stack(scores, dim=1).view(n, c, depth)

    def hard_negative_scorer(self, source: str):
        """Label scores [N, C] for mining hard negatives: from the first layer only (cheap) or from
        the layers that make predictions (what the network would answer). They are taken in eval mode, so no
        dropout draw enters the ranking and batch norm's statistics are not fed the candidate rows."""
        depth = 1 if source == "first_layer" else max(self.predict_layers) + 1
        layers = [0] if source == "first_layer" else self.predict_layers

        def scores(x: torch.Tensor) -> torch.Tensor:
            with evaluating(self):
                return self.label_scores(x, depth=depth)[:, :, layers].sum(2)

        return scores

    @torch.no_grad()
    def readout_features(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenated activity directions (unit RMS) of the readout's layers, for a neutral label."""
        layers = self.readout.layers
        h = self.embedding.neutral(x)
        features = []
        for i, layer in enumerate(self.layers[: max(layers) + 1]):
            h = layer(h)
            if i in layers:
                features.append(normalize_direction(layer.latent(h), "rms"))
        return torch.cat(features, dim=1)

    @torch.no_grad()
    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """Every layer's activity for a neutral label (the plain input, unsupervised), concatenated [N, sum H]."""
        hs = self.activities(self.embedding.neutral(x))
        return torch.cat([layer.latent(h) for layer, h in zip(self.layers, hs, strict=True)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-class scores [N, C] of plain inputs `x`, whose argmax is `predict`: the goodness summed over
        `predict_layers` with each candidate label written in (one pass for competitive learners), or the
        readout's logits for a network that takes no label."""
        if self.predicts_by_goodness:
            return self.label_scores(x)[:, :, self.predict_layers].sum(2)
        if self.readout is None:
            raise ValueError("this network takes no label and has no readout, so it cannot score classes")
        return self.readout(self.readout_features(x))

    @torch.no_grad()
    def predictions(self, x: torch.Tensor, batch_size: int = 1000) -> Predictions:
        """Predicted labels by every method this network has: "goodness" (and each layer alone) when it
        takes labels, "readout" when it has one."""
        self.eval()
        by_method, per_layer = {}, []
        if self.predicts_by_goodness:
            scores = in_batches(self.label_scores, x, batch_size)
            by_method["goodness"] = predict_from_scores(scores, self.predict_layers)
            per_layer = [predict_from_scores(scores, [j]) for j in range(scores.shape[2])]
        if self.readout is not None:
            logits = in_batches(lambda b: self.readout(self.readout_features(b)), x, batch_size)
            by_method["readout"] = logits.argmax(1)
        return Predictions(by_method, per_layer)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """The best-scoring label of each input (see `forward`), a chunk at a time."""
        return in_batches(self, x, batch_size).argmax(1)
