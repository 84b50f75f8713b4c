"""Goodness functions and FF losses: pure functions on tensors.

Goodness turns a layer's activity [N, D] into one score per sample [N]. The FF loss is
softplus of the signed distance between that score and a threshold theta (Hinton 2022,
eq. 1): with the *standard* objective, positive data should score above theta and negative
data below; with the *inverted* objective the roles swap (positive data should be quiet).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from fflab.vocab import OBJECTIVES

GoodnessFn = Callable[[torch.Tensor], torch.Tensor]


def _at_least_float32(h: torch.Tensor) -> torch.Tensor:
    """bfloat16 activity (train.precision) cast up for summing; float32 and float64 as they are. bfloat16
    keeps 3 significant digits, too few to rank the labels' goodness against each other."""
    return h.to(torch.promote_types(h.dtype, torch.float32))


def sum_squares(h: torch.Tensor) -> torch.Tensor:
    """Sum of squared activities over every non-batch dimension."""
    return _at_least_float32(h).pow(2).flatten(1).sum(1)


def mean_squares(h: torch.Tensor) -> torch.Tensor:
    """Mean of squared activities: sum of squares divided by the number of units."""
    return _at_least_float32(h).pow(2).flatten(1).mean(1)


def mean_activity(h: torch.Tensor) -> torch.Tensor:
    """Mean activity, not squared: DeeperForward's "mean goodness" (Sun et al. 2025), for ReLU units whose
    output is normalised before the next layer sees it."""
    return _at_least_float32(h).flatten(1).mean(1)


GOODNESS: dict[str, GoodnessFn] = {
    "sum_squares": sum_squares,
    "mean_squares": mean_squares,
    "mean_activity": mean_activity,
}


def goodness_fn(name: str) -> GoodnessFn:
    """Look up a goodness function by name."""
    try:
        return GOODNESS[name]
    except KeyError:
        raise ValueError(f"unknown goodness {name!r}; expected one of {sorted(GOODNESS)}") from None


def positive_sign(objective: str) -> float:
    """+1 if positive data should have high goodness (standard), -1 if low (inverted)."""
    if objective == "standard":
        return 1.0
    if objective == "inverted":
        return -1.0
    raise ValueError(f"unknown objective {objective!r}; expected one of {list(OBJECTIVES)}")


def ff_logits(goodness: torch.Tensor, theta: float, objective: str = "standard") -> torch.Tensor:
    """Logit of "this sample is positive": sign * (goodness - theta)."""
    return positive_sign(objective) * (goodness - theta)


def softplus_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, theta: float, objective: str = "standard") -> torch.Tensor:
    """Hinton's per-sample FF loss, averaged over positive and negative samples.

    standard: softplus(theta - g_pos) and softplus(g_neg - theta);
    inverted: softplus(g_pos - theta) and softplus(theta - g_neg).
    This is the logistic loss of p(positive) = sigmoid(sign * (g - theta)).
    """
    pos = F.softplus(-ff_logits(g_pos, theta, objective))
    neg = F.softplus(ff_logits(g_neg, theta, objective))
    return 0.5 * (pos.mean() + neg.mean())


def symba_loss(
    g_pos: torch.Tensor, g_neg: torch.Tensor, alpha: float = 4.0, objective: str = "standard"
) -> torch.Tensor:
    """Symmetric FF loss of SymBa (Lee & Song 2023): softplus(-alpha * sign * (g_pos - g_neg)).

    Row i of g_pos and g_neg come from the same sample (e.g. one image with its true and a wrong
    label), so the loss pushes the pair apart by margin instead of each past a threshold; positive
    and negative data get gradients of equal size.
    """
    if g_pos.shape != g_neg.shape:
        raise ValueError(f"symba pairs positive and negative rows one to one; got {len(g_pos)} and {len(g_neg)}")
    return F.softplus(-alpha * positive_sign(objective) * (g_pos - g_neg)).mean()


def unbounded_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, objective: str = "standard") -> torch.Tensor:
    """Goodness ascent on positive and descent on negative data, with no threshold and no bound:
    sign * (mean(g_neg) - mean(g_pos)). CheneyX2000's NumPy layer moves W by +- lr * dG/dW per sample
    (W += lr * 2 x (a (1 - a^2)) for a positive tanh layer, -= for a negative one), which is SGD on this loss."""
    return positive_sign(objective) * (g_neg.mean() - g_pos.mean())


def squared_distance_loss(
    h_pos: torch.Tensor, h_neg: torch.Tensor, theta: float, objective: str = "standard"
) -> torch.Tensor:
    """sign * (mean((h_pos - theta)^2) - mean((h_neg - theta)^2)) over every unit of every row: the loss of
    Nicola97's spiking metalayer (`torch.mean((g_pos - self.threshold)**2) - torch.mean((g_neg - ...)**2)`, whose
    g_pos is the layer's spike output itself, not a goodness). Below theta it raises positive activity and lowers
    negative activity, without bound."""
    sign = positive_sign(objective)
    return sign * ((h_pos - theta).pow(2).mean() - (h_neg - theta).pow(2).mean())


def probability_positive(goodness: torch.Tensor, theta: float, objective: str = "standard") -> torch.Tensor:
    """The FF probability that a sample is positive data."""
    return torch.sigmoid(ff_logits(goodness, theta, objective))
