"""How labels enter the input, and how negative data are made.

Supervised FF shows the network an image together with a label: the true label makes
positive data, a wrong label makes negative data. Two embeddings are offered:
  overlay - the one-hot label replaces the first C pixels of the flattened image (Hinton 2022);
  concat  - the one-hot label is appended to the flattened image.
Both write the label into C input positions that hold nothing else, which is what lets
prediction share the first layer's work across candidate labels (see FFNetwork).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

LABEL_MODES = ("overlay", "concat")
NEGATIVE_MODES = ("random", "hard", "hardest")


class LabelEmbedding:
    """Writes one-hot labels into flattened inputs [N, D] at fixed positions."""

    def __init__(self, mode: str, num_classes: int, input_dim: int, value: float = 1.0) -> None:
        if mode not in LABEL_MODES:
            raise ValueError(f"unknown label mode {mode!r}; expected one of {list(LABEL_MODES)}")
        if mode == "overlay" and num_classes > input_dim:
            raise ValueError(f"cannot overlay {num_classes} labels on an input of {input_dim} values")
        self.mode = mode
        self.num_classes = num_classes
        self.data_dim = input_dim
        self.value = value

    @property
    def input_dim(self) -> int:
        """Width of the embedded input the first layer sees."""
        return self.data_dim + (self.num_classes if self.mode == "concat" else 0)

    @property
    def label_offset(self) -> int:
        """Index of the input position that carries label 0; label c sits at offset + c."""
        return 0 if self.mode == "overlay" else self.data_dim

    def blank(self, x: torch.Tensor) -> torch.Tensor:
        """The input with all label positions zero: [N, input_dim]."""
        x = x.flatten(1)
        if self.mode == "overlay":
            out = x.clone()
            out[:, : self.num_classes] = 0.0
            return out
        return torch.cat([x, x.new_zeros(x.shape[0], self.num_classes)], dim=1)

    def embed(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The input with the one-hot code of `labels` written into the label positions."""
        out = self.blank(x)
        out[torch.arange(out.shape[0], device=out.device), self.label_offset + labels] = self.value
        return out

    def neutral(self, x: torch.Tensor) -> torch.Tensor:
        """The input with a uniform label code (value / C everywhere): no label information."""
        out = self.blank(x)
        out[:, self.label_offset : self.label_offset + self.num_classes] = self.value / self.num_classes
        return out


def random_wrong_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random label different from the true one, for every sample.

    Adding an offset in [1, C-1] modulo C can never return the true label and is uniform
    over the other C-1 labels.
    """
    offset = torch.randint(1, num_classes, labels.shape, generator=generator, device=labels.device)
    return (labels + offset) % num_classes


def hard_wrong_labels(
    scores: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The wrong labels the model finds most plausible (Hinton 2022, section 3.3).

    `scores` [N, C] rank the candidate labels (higher = more like positive data). With a
    generator, a wrong label is sampled with probability softmax(score / temperature) over the
    wrong labels; without one, the highest-scoring wrong label is taken. The true label is
    masked out first, so it can never be chosen.
    """
    masked = scores.float().scatter(1, labels.unsqueeze(1), float("-inf"))
    if generator is None:
        return masked.argmax(1)
    probs = torch.softmax(masked / temperature, dim=1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


Scorer = Callable[[torch.Tensor], torch.Tensor]


class SupervisedPairs:
    """Positive data = input with its true label; negative data = the same input with a wrong label.

    negatives: "random" (uniform over wrong labels), "hard" (sampled in proportion to the
    model's belief in each wrong label) or "hardest" (the most believed wrong label). The hard
    modes need a `scorer` mapping inputs [N, ...] to label scores [N, C].
    """

    def __init__(self, embedding: LabelEmbedding, negatives: str = "random", temperature: float = 1.0) -> None:
        if negatives not in NEGATIVE_MODES:
            raise ValueError(f"unknown negatives {negatives!r}; expected one of {list(NEGATIVE_MODES)}")
        self.embedding = embedding
        self.negatives = negatives
        self.temperature = temperature

    def wrong_labels(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, scorer: Scorer | None
    ) -> torch.Tensor:
        if self.negatives == "random":
            return random_wrong_labels(y, self.embedding.num_classes, generator)
        if scorer is None:
            raise ValueError(f"negatives={self.negatives!r} needs a scorer (the model's label scores)")
        with torch.no_grad():
            scores = scorer(x)
        return hard_wrong_labels(scores, y, generator if self.negatives == "hard" else None, self.temperature)

    def make(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, scorer: Scorer | None = None
    ) -> torch.Tensor:
        """[2N, D]: the N positive rows, then the N negative rows (same images, wrong labels)."""
        wrong = self.wrong_labels(x, y, generator, scorer)
        return torch.cat([self.embedding.embed(x, y), self.embedding.embed(x, wrong)])
