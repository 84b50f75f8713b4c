"""Feed-forward wiring: a chain of local learners (Hinton 2022, supervised FF)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fflab.layers import FFDense, FFLearner
from fflab.supervision import LabelEmbedding


@dataclass
class LocalResult:
    """One learner's loss (with its graph) and its detached goodness for the batch."""

    loss: torch.Tensor
    goodness: torch.Tensor


class FFNetwork(nn.Module):
    """A stack of FF learners, each fed the detached activity of the one below.

    Prediction scores every candidate label: the label is written into the input, the
    stack runs, and the positive-signed goodness of the `predict_layers` is summed; the
    best-scoring label wins (Hinton 2022, section 3.3).
    """

    def __init__(
        self,
        layers: Sequence[FFLearner],
        embedding: LabelEmbedding,
        predict_layers: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError("an FF network needs at least one layer")
        self.layers = nn.ModuleList(layers)
        self.embedding = embedding
        n = len(layers)
        # The paper skips the first hidden layer when judging labels; with one layer, use it.
        default = list(range(1, n)) if n > 1 else [0]
        chosen = list(predict_layers) if predict_layers else default
        bad = [i for i in chosen if not 0 <= i < n]
        if bad:
            raise ValueError(f"predict_layers {bad} out of range for a network of {n} layers (0..{n - 1})")
        self.predict_layers = chosen

    @property
    def num_classes(self) -> int:
        return self.embedding.num_classes

    def forward_flops(self) -> int:
        """Matrix-multiply FLOPs of one forward pass of one input (2 per multiply-add).

        Training costs 4x this per sample: a positive and a negative row, each with a forward
        product and a weight-gradient product (inputs are detached, so no input gradient).
        """
        return sum(2 * layer.in_features * layer.out_features for layer in self.layers)

    def activities(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's activity for embedded inputs `x`; no gradient crosses layers."""
        out = []
        h = x
        for layer in self.layers:
            h = layer(h.detach())
            out.append(h)
        return out

    def local_losses(self, x: torch.Tensor, n_pos: int) -> list[LocalResult]:
        """Each learner's own loss on a batch whose first `n_pos` rows are positive data."""
        results = []
        for layer, h in zip(self.layers, self.activities(x), strict=True):
            loss, g = layer.local_loss(h, n_pos)
            results.append(LocalResult(loss, g.detach()))
        return results

    @torch.no_grad()
    def label_scores(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Positive-signed goodness of the first `depth` layers (default all) for every label: [N, C, depth].

        All candidates run as one batch. A dense first layer shares its matrix product
        across candidates (see FFDense.forward_label_candidates), so depth=1 costs about one
        forward pass of the first layer.
        """
        depth = len(self.layers) if depth is None else depth
        emb, n, c = self.embedding, x.shape[0], self.num_classes
        first = self.layers[0]
        blank = emb.blank(x)
        if isinstance(first, FFDense):
            h = first.forward_label_candidates(blank, emb.label_offset, c, emb.value).reshape(n * c, -1)
        else:
            labels = torch.arange(c, device=x.device).repeat(n)
            h = first(emb.embed(blank.repeat_interleave(c, 0), labels))
        scores = [first.positive_score(first.goodness(h))]
        for layer in self.layers[1:depth]:
            h = layer(h)
            scores.append(layer.positive_score(layer.goodness(h)))
        return torch.stack(scores, dim=1).view(n, c, depth)

    def hard_negative_scorer(self, source: str):
        """Label scores [N, C] for mining hard negatives: from the first layer only (cheap) or from
        the layers that make predictions (what the network would answer)."""
        if source == "first_layer":
            return lambda x: self.label_scores(x, depth=1)[:, :, 0]
        deepest = max(self.predict_layers) + 1
        return lambda x: self.label_scores(x, depth=deepest)[:, :, self.predict_layers].sum(2)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """The label whose summed goodness over `predict_layers` is best."""
        return predict_from_scores(self.scores_in_batches(x, batch_size), self.predict_layers)

    @torch.no_grad()
    def scores_in_batches(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """label_scores over a large input, a chunk at a time to bound memory."""
        return torch.cat([self.label_scores(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def predict_from_scores(scores: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
    """argmax over labels of the scores [N, C, L] summed over the chosen layers."""
    return scores[:, :, list(layers)].sum(2).argmax(1)
