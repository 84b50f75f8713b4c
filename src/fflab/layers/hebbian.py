"""Neo-Hebbian FF layer (Terres-Escudero, Del Ser & Garcia-Bringas, arXiv 2406.16479).

With a squared-norm goodness G = sum_i h_i^2 and the FF probability P = sigmoid(s (G - theta)), the
gradient of the FF loss (binary cross-entropy of P against target 1 for positive and 0 for negative
data) through a ReLU unit h = relu(W x) is

    -dL/dW = 2 s (target - P) h x^T          (divided by H for the mean-square goodness),

a Hebbian outer product of postsynaptic activity h and presynaptic activity x, gated by a third
factor m = target - P that is one scalar per sample. A spiking layer uses the same rule with
postsynaptic and presynaptic *traces* in place of h and x, summed over time steps (an eligibility
trace), and needs no gradient at all. The symmetric form splits the units into a positive and a
negative half and uses P = G_pos / (G_pos + G_neg); the positive half learns with factor
(target - P), the negative half with -(target - P).

For LIF units the plain product leaves out how a unit's firing responds to its input, and it drifts
away from the FF loss's gradient as training goes on (benchmarks/hebbian_direction.py measures it).
`post_gate = "surrogate"` restores that factor locally: each step's postsynaptic trace is weighted by
the surrogate derivative of the unit's spike at its own membrane potential (e-prop's
pseudo-derivative). It is still a three-factor rule of the layer's own state.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fflab.objectives import goodness_fn
from fflab.spiking import LIF, trace
from fflab.vocab import NEURONS, POST_GATES, THIRD_FACTORS

EPS = 1e-6


class HebbianFFLayer(nn.Module):
    """A layer of LIF (or, for the analog twin, ReLU) units whose weights learn by the neo-Hebbian FF rule.

    `simulate` maps an input train [T, N, D] to postsynaptic traces (and spikes); `update` applies
    dW = lr * sum_t w_t * m * post_t (outer) pre_t, with the eligibility weights
    w_t = rate * decay^(T-1-t) / T, using nothing but this layer's traces and the scalar third factor.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        neuron: str = "lif",
        beta: float = 0.9,
        threshold: float = 1.0,
        reset: str = "subtract",
        surrogate: str = "fast_sigmoid",
        slope: float = 25.0,
        post_gate: str = "none",
        trace_kind: str = "leaky",
        trace_decay: float = 0.9,
        third_factor: str = "sigmoid",
        goodness: str = "mean_squares",
        scale: float = 1.0,
        theta: float = 1.0,
        eligibility_decay: float = 1.0,
        eligibility_rate: float = 1.0,
        top_k: int = 0,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if neuron not in NEURONS:
            raise ValueError(f"unknown neuron {neuron!r}; expected one of {list(NEURONS)}")
        if third_factor not in THIRD_FACTORS:
            raise ValueError(f"unknown third factor {third_factor!r}; expected one of {list(THIRD_FACTORS)}")
        if post_gate not in POST_GATES:
            raise ValueError(f"unknown post_gate {post_gate!r}; expected one of {list(POST_GATES)}")
        if goodness not in ("sum_squares", "mean_squares"):
            raise ValueError(f"a Hebbian layer's goodness is 'sum_squares' or 'mean_squares', got {goodness!r}")
        if third_factor == "symmetric" and out_features % 2:
            raise ValueError(f"the symmetric third factor splits the units in halves; {out_features} is odd")
        if not 0 <= top_k <= out_features:
            raise ValueError(f"top_k must be in 0..{out_features} (0: off), got {top_k}")
        self.in_features, self.out_features = in_features, out_features
        self.neuron, self.third_factor, self.goodness_name, self.post_gate = neuron, third_factor, goodness, post_gate
        self.trace_kind, self.trace_decay = trace_kind, trace_decay
        self.scale, self.theta, self.top_k = scale, theta, top_k
        self.eligibility_decay, self.eligibility_rate = eligibility_decay, eligibility_rate
        weight = torch.randn(out_features, in_features) * (init_scale * math.sqrt(2.0 / in_features))
        self.weight = nn.Parameter(weight, requires_grad=False)  # learned by the Hebbian rule, not by autograd
        self.lif = LIF(beta, threshold, reset, surrogate, slope) if neuron == "lif" else None
        sign = torch.ones(out_features)
        if third_factor == "symmetric":
            sign[out_features // 2 :] = -1.0
        self.register_buffer("half_sign", sign)

    def simulate(
        self, pre: torch.Tensor, learning: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(postsynaptic trace, output spikes, presynaptic trace, postsynaptic gate), each [T, N, .], for the
        input train `pre`. The presynaptic trace only when `learning` (scoring does not need it, and it is the
        largest tensor); the gate only when learning with post_gate = "surrogate" (else None: no gate).

        The analog twin has no dynamics: its activity relu(W x_t) is both its trace and its output.
        """
        current = pre @ self.weight.t()  # one product for all steps
        if self.lif is None:
            h = torch.relu(current)
            return h, h, pre, None
        spikes, gate = self.lif.run_with_gate(current, gate=learning and self.post_gate == "surrogate")
        pre_trace = trace(pre, self.trace_kind, self.trace_decay) if learning else None
        return trace(spikes, self.trace_kind, self.trace_decay), spikes, pre_trace, gate

    def _per_step_goodness(self, post: torch.Tensor) -> torch.Tensor:
        """The configured goodness of each step's trace [T, N, units] -> [T, N]."""
        return goodness_fn(self.goodness_name)(post.reshape(-1, post.shape[-1])).view(post.shape[:-1])

    def goodness(self, post: torch.Tensor) -> torch.Tensor:
        """Goodness per sample [N]: squared norm of the trace averaged over steps ([N, 2] halves if symmetric)."""
        if self.third_factor == "symmetric":
            half = self.out_features // 2
            return torch.stack(
                [self._per_step_goodness(post[..., :half]), self._per_step_goodness(post[..., half:])], -1
            ).mean(0)
        return self._per_step_goodness(post).mean(0)

    def probability(self, post: torch.Tensor) -> torch.Tensor:
        """The layer's probability that each sample is positive data [N]."""
        g = self.goodness(post)
        if self.third_factor == "symmetric":
            return g[:, 0] / (g.sum(1) + EPS)
        return torch.sigmoid(self.scale * (g - self.theta))

    def third_factor_per_unit(self, post: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """m [N, H]: the scalar (target - P) of each sample, with the constant (and, symmetric, per-half)
        gain that makes the Hebbian update equal to the FF loss's negative gradient for analog units."""
        p = self.probability(post).clamp(EPS, 1 - EPS)
        m = target - p
        per_unit = 2.0 / (self.out_features if self.goodness_name == "mean_squares" else 1)
        if self.third_factor == "sigmoid":
            return (self.scale * per_unit * m).unsqueeze(1).expand(-1, self.out_features)
        # Symmetric form: each half gets the plain factor (target - P), signed +1 (positive half) or -1.
        # The exact gradient would also scale it by 1 / (P G) or 1 / ((1 - P) G), which explodes when a
        # layer falls silent (G -> 0); dropping that positive per-sample gain keeps the direction of every
        # sample's update and is the neo-Hebbian rule's form.
        if self.goodness_name == "mean_squares":
            per_unit *= 2  # each half's goodness is a mean over H/2 units, not H
        return per_unit * m.unsqueeze(1) * self.half_sign

    def loss(self, post: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The FF loss the rule descends: binary cross-entropy of P against the targets (a report, not a graph)."""
        p = self.probability(post).clamp(EPS, 1 - EPS)
        return -(target * p.log() + (1 - target) * (1 - p).log()).mean()

    def update_direction(
        self, pre: torch.Tensor, post: torch.Tensor, target: torch.Tensor, gate: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The weight change per unit learning rate [H, D], from traces [T, N, .], targets [N] and, if given,
        the postsynaptic gate [T, N, H] only. The third factor comes from the ungated trace's goodness."""
        steps, n = post.shape[0], post.shape[1]
        m = self.third_factor_per_unit(post, target)  # [N, H]
        if self.top_k:
            winners = post.mean(0).topk(self.top_k, dim=1).indices
            m = m * torch.zeros_like(m).scatter_(1, winners, 1.0)
        ages = torch.arange(steps - 1, -1, -1, dtype=post.dtype, device=post.device)
        w = self.eligibility_rate * self.eligibility_decay**ages / steps  # [T]
        eligible = post if gate is None else post * gate
        gated = eligible * m.unsqueeze(0) * w.view(steps, 1, 1)  # [T, N, H]
        return gated.reshape(steps * n, -1).t() @ pre.reshape(steps * n, -1) / n

    @torch.no_grad()
    def update(
        self, pre: torch.Tensor, post: torch.Tensor, target: torch.Tensor, lr: float, gate: torch.Tensor | None = None
    ) -> None:
        self.weight.add_(self.update_direction(pre, post, target, gate), alpha=lr)

    def forward_flops(self, steps: int) -> int:
        """Multiply-add FLOPs of one sample's input products over `steps` steps."""
        return 2 * steps * self.in_features * self.out_features

    def extra_repr(self) -> str:
        return (
            f"{self.in_features} -> {self.out_features}, neuron={self.neuron}, third_factor={self.third_factor}, "
            f"goodness={self.goodness_name}, trace={self.trace_kind}, post_gate={self.post_gate}, top_k={self.top_k}"
        )
