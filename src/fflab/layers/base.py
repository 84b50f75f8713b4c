"""The local learner: a forward map with its own goodness and its own FF objective."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fflab.layers.kept_cast import KeptCast
from fflab.objectives import (
    goodness_fn,
    positive_sign,
    softplus_loss,
    squared_distance_loss,
    symba_loss,
    unbounded_loss,
)
from fflab.vocab import LOSSES


def require_choice(option: str, value: str, choices) -> None:
    """ValueError naming the option and its valid values unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"unknown {option} {value!r}; expected one of {sorted(choices)}")


def confine(module: nn.Module, weight: nn.Parameter, mask: torch.Tensor, name: str) -> None:
    """Hold `weight` at zero outside `mask` (a fixed wiring, e.g. local receptive fields) without masking it
    in every forward pass, which costs a copy of the matrix per product (it made a 3,072 x 9,216 product
    40-55% slower on this CPU): zero the entries now, and mask the weight's gradient in place each time a
    backward pass has accumulated it into `.grad` (gradients taken with `torch.autograd.grad` are not masked).
    An optimiser step on a zero gradient leaves a zero at zero (SGD, Adam, and weight decay, which scales
    the entry itself). The mask is `module`'s buffer `name`, so it moves with the module; loaded weights are
    masked again, so a state from elsewhere cannot reach outside the fields. The hook lives on the
    Parameter: a `copy.deepcopy` of the module loses it (build a fresh module and load its state instead)."""
    module.register_buffer(name, mask.bool(), persistent=False)

    def zero_outside(*_) -> None:
        with torch.no_grad():
            weight.mul_(getattr(module, name))

    def mask_gradient(param: torch.Tensor) -> None:  # in place, once the backward pass has summed every use
        param.grad.mul_(getattr(module, name))

    zero_outside()
    weight.register_post_accumulate_grad_hook(mask_gradient)
    module.register_load_state_dict_post_hook(zero_outside)


class FFLearner(nn.Module):
    """Base class of every FF layer.

    Subclasses define `forward`; this class scores activity (`goodness`) and turns the
    goodness of a batch whose first `n_pos` rows are positive data into the layer's own
    loss (`local_loss`). A learner never sees another learner's parameters: callers pass
    it detached inputs, so its loss has gradients for its own parameters only.
    """

    def __init__(
        self,
        goodness: str = "sum_squares",
        theta: float = 1.0,
        objective: str = "standard",
        loss: str = "softplus",
        alpha: float = 4.0,
        peer_weight: float = 0.0,
        peer_momentum: float = 0.9,
        num_classes: int = 0,
        label_smoothing: float = 0.0,
    ) -> None:
        """`num_classes` and `label_smoothing` are for the competitive loss only: unit (or channel) groups, one
        per class, and how far its cross-entropy targets are smoothed towards uniform."""
        super().__init__()
        self.peer_weight = float(peer_weight)
        self.peer_momentum = float(peer_momentum)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {list(LOSSES)}")
        if loss == "competitive" and num_classes < 2:
            raise ValueError("the competitive loss needs num_classes >= 2 (one group of units per class)")
        self.loss_name = loss
        self.num_classes = num_classes
        self.label_smoothing = float(label_smoothing)
        self.alpha = float(alpha)
        self.goodness_name = goodness
        self._goodness = goodness_fn(goodness)
        positive_sign(objective)  # validates the name
        self.objective = objective
        self.theta = float(theta)

    @property
    def in_features(self) -> int:
        """Input width (of the layer's `linear` map; layers with another structure override this)."""
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def unit_goodness(self, h: torch.Tensor) -> torch.Tensor:
        """Goodness of each part of the activity that the loss judges separately: [N, K].

        Dense layers judge the whole activity (K = 1); spatial layers may judge each position or
        channel on its own.
        """
        return self._goodness(h).unsqueeze(1)

    def goodness(self, h: torch.Tensor) -> torch.Tensor:
        """One goodness score per sample of the activity `h` (the mean over its judged parts)."""
        return self.unit_goodness(h).mean(1)

    def class_goodness(self, h: torch.Tensor) -> torch.Tensor:
        """Goodness of each class's group of units [N, num_classes] (channel-wise competitive FF).

        The units (channels of a feature map) are split into `num_classes` consecutive groups.
        """
        n = h.shape[0]
        return self._goodness(h.reshape(n * self.num_classes, -1)).view(n, self.num_classes)

    def local_loss(
        self,
        h: torch.Tensor,
        n_pos: int,
        labels: torch.Tensor | None = None,
        batch_activity: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, goodness) for activity `h` whose first `n_pos` rows come from positive data.

        `batch_activity` (data-parallel training) turns this slice's mean activity per unit into the
        whole batch's, so that peer normalisation's running means stay those of one process.

        The competitive loss needs no negative rows but the `labels` of the positive ones: it is the
        cross-entropy of softmax(alpha * class_goodness) (Papachristodoulou et al. 2024), against one-hot
        targets or, with `label_smoothing` e, targets of 1 - e + e/C for the class and e/C elsewhere. Its returned
        goodness is that of the true class's group, then the mean of the other groups (2N values), so
        statistics still compare "positive" with "negative" goodness.
        """
        if self.loss_name == "competitive":
            if labels is None:
                raise ValueError("the competitive loss needs the labels of the batch")
            g = self.class_goodness(h)
            loss = F.cross_entropy(self.alpha * g, labels, label_smoothing=self.label_smoothing)
            own = g.gather(1, labels.unsqueeze(1)).squeeze(1)
            others = (g.sum(1) - own) / (self.num_classes - 1)
            return loss, torch.cat([own, others])
        units = self.unit_goodness(h)
        g_pos, g_neg = units[:n_pos], units[n_pos:]
        if self.loss_name == "symba":
            loss = symba_loss(g_pos, g_neg, self.alpha, self.objective)
        elif self.loss_name == "unbounded":
            loss = unbounded_loss(g_pos, g_neg, self.objective)
        elif self.loss_name == "squared_distance":
            loss = squared_distance_loss(h[:n_pos], h[n_pos:], self.theta, self.objective)
        else:
            loss = softplus_loss(g_pos, g_neg, self.theta, self.objective)
        if self.peer_weight > 0 and self.training:
            loss = loss + self.peer_weight * self.peer_normalization_loss(h[:n_pos], batch_activity)
        return loss, units.mean(1)

    @property
    def logit_scale(self) -> float:
        """What turns a goodness difference into the log-odds the loss trains: alpha for SymBa and the
        competitive loss (sigmoid(alpha (G+ - G-))), 1 for the threshold loss (sigmoid(G - theta)) and the unbounded
        and squared-distance losses, which define no probability."""
        return self.alpha if self.loss_name in ("symba", "competitive") else 1.0

    def latent(self, h: torch.Tensor) -> torch.Tensor:
        """The activity as one vector per sample [N, D] (spiking layers: firing rates)."""
        return h.flatten(1)

    def kept_casts(self) -> dict[torch.Tensor, KeptCast]:
        """This layer's weights whose products use a kept lower-precision copy, each with its holder
        (`fflab.training.cast_adam.CastAdam` steps them); none by default."""
        return {}

    def register_peer_mean(self, units: int) -> None:
        """The running mean activity of each unit on positive data, for peer normalisation."""
        self.register_buffer("peer_mean", torch.full((units,), 0.5))

    def unit_activity(self, h: torch.Tensor) -> torch.Tensor:
        """Mean activity of each unit over a batch (subclasses with spatial maps average per channel)."""
        return h.mean(0)

    def peer_normalization_loss(
        self, h_pos: torch.Tensor, batch_activity: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Hinton's peer normalisation: regress every unit's running mean activity (on positive data)
        towards the layer's average, so that no unit is always on or always off.

        As in his code, the running means are first updated with this batch, then each unit's activity
        on each positive sample gets the gradient (running_j - mean(running)) / N, which `peer_weight`
        scales (his lambdamean, 0.03 with sum-of-squares goodness). With mean-of-squares goodness the
        FF gradient per unit is 1/units as large, so the peer gradient is scaled the same way and one
        `peer_weight` means the same at any width. The running means are constants of that gradient;
        the returned value is only a surrogate that carries it.

        Unlike his code, silent ReLU units get no peer gradient: passing it through them cost 0.4
        points on MNIST (BENCHMARKS.md, issue 3).
        """
        activity = self.unit_activity(h_pos)
        with torch.no_grad():
            batch = activity if batch_activity is None else batch_activity(activity.detach())
            self.peer_mean.mul_(self.peer_momentum).add_(batch, alpha=1 - self.peer_momentum)
            excess = self.peer_mean - self.peer_mean.mean()
            if self.goodness_name == "mean_squares":
                excess /= len(excess)
        return (excess * activity).sum()

    def positive_score(self, goodness: torch.Tensor) -> torch.Tensor:
        """Goodness signed so that larger always means "more like positive data"."""
        return positive_sign(self.objective) * goodness
