"""Neo-Hebbian FF layer (Terres-Escudero, Del Ser & Garcia-Bringas, arXiv 2406.16479).

With a squared-norm goodness G = sum_i h_i^2 and the FF probability P = sigmoid(s (G - theta)), the
gradient of the FF loss (binary cross-entropy of P against target 1 for positive and 0 for negative
data) through a ReLU unit h = relu(W x) is

    -dL/dW = 2 s (target - P) h x^T          (divided by H for the mean-square goodness),

a Hebbian outer product of postsynaptic activity h and presynaptic activity x, gated by a third
factor m = target - P that is one scalar per sample. A spiking layer uses the same rule with
postsynaptic and presynaptic *traces* in place of h and x, summed over time steps (an eligibility
trace), and needs no gradient at all. The symmetric form splits the units into a positive and a
negative half and uses P = G_pos / (G_pos + G_neg) (with an eps, below); the positive half learns with
factor (target - P), the negative half with -(target - P), each scaled by its own gain.

For LIF units the plain product leaves out how a unit's firing responds to its input, and it drifts
away from the FF loss's gradient as training goes on (benchmarks/hebbian_direction.py measures it).
`post_gate = "surrogate"` restores that factor locally: each step's postsynaptic trace is weighted by
the surrogate derivative of the unit's spike at its own membrane potential (e-prop's
pseudo-derivative). It is still a three-factor rule of the layer's own state.

The symmetric factor. With eps added to each half's goodness, P = (G+ + eps) / (G+ + G- + 2 eps), and the FF
loss's gradient gives the two halves different gains: (target - P) / (G+ + eps) on the positive half and
-(target - P) / (G- + eps) on the negative one. `symmetric_rule = "notebook"` is the expression of Hebbian_FFA's
`Symmetric_Probability.hebbian_update` (erikberter/Hebbian_FFA, training.ipynb), whose shared denominator
G+ + G- + eps takes eps once: the gradient's gains times (G+ + G- + 2 eps) / (G+ + G- + eps).

Online plasticity (Hebbian_FFA's spiking layer): instead of one update after the presentation, `online_step`
advances the layer one time step and `learn_step` applies that step's update, dW_t = m(trace_t) trace_t (outer)
input_t, from the output trace so far and the step's own input spikes, at the late steps of the presentation
only. An eligibility trace E <- (1 - tau) E + tau dW, carried across steps and samples, can stand between the
update and the weights (W += lr E).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fflab.objectives import goodness_fn
from fflab.spiking import LIF, trace
from fflab.spiking.traces import trace_step
from fflab.vocab import HEBBIAN_INITS, NEURONS, POST_GATES, SYMMETRIC_RULES, THIRD_FACTORS

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
        init: str = "he",
        symmetric_rule: str = "gradient",
        sym_eps: float = 0.01,
        p_clip: float = 0.0,
        eligibility_tau: float = 0.0,
        carry_membrane: bool = False,
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
        if init not in HEBBIAN_INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {list(HEBBIAN_INITS)}")
        if symmetric_rule not in SYMMETRIC_RULES:
            raise ValueError(f"unknown symmetric_rule {symmetric_rule!r}; expected one of {list(SYMMETRIC_RULES)}")
        if not 0 <= eligibility_tau <= 1:
            raise ValueError(f"eligibility_tau must be in [0, 1] (0: off), got {eligibility_tau}")
        self.in_features, self.out_features = in_features, out_features
        self.neuron, self.third_factor, self.goodness_name, self.post_gate = neuron, third_factor, goodness, post_gate
        self.trace_kind, self.trace_decay = trace_kind, trace_decay
        self.scale, self.theta, self.top_k = scale, theta, top_k
        self.eligibility_decay, self.eligibility_rate = eligibility_decay, eligibility_rate
        self.symmetric_rule, self.sym_eps, self.p_clip = symmetric_rule, sym_eps, p_clip
        self.eligibility_tau, self.carry_membrane = eligibility_tau, carry_membrane
        if init == "he":
            weight = torch.randn(out_features, in_features) * (init_scale * math.sqrt(2.0 / in_features))
        elif init == "normal":  # Hebbian_FFA's spiking layer: torch.randn(num_inputs, num_neurons)
            weight = torch.randn(out_features, in_features) * init_scale
        else:  # torch.nn.Linear's default (Hebbian_FFA's analog layer): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            weight = (torch.rand(out_features, in_features) * 2 - 1) * (init_scale / math.sqrt(in_features))
        self.weight = nn.Parameter(weight, requires_grad=False)  # learned by the Hebbian rule, not by autograd
        if eligibility_tau:  # the carried eligibility trace: state of the run, saved with the weights
            self.register_buffer("eligibility", torch.zeros(out_features, in_features))
        self.carried: torch.Tensor | None = None  # membrane left by the last training sample (carry_membrane)
        self._online: list[torch.Tensor | None] = [None, None]  # membrane and trace of a step-by-step presentation
        self.lif = LIF(beta, threshold, reset, surrogate, slope) if neuron == "lif" else None
        self._lif_constants = (beta, threshold, reset)  # read at every step of online plasticity
        sign = torch.ones(out_features)
        if third_factor == "symmetric":
            sign[out_features // 2 :] = -1.0
        self.register_buffer("half_sign", sign)  # kept for the checkpoints that hold it
        self.half_signs = torch.tensor([1.0, -1.0])  # the halves' signs in the symmetric factor

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

    def begin_online(self, n: int) -> None:
        """Start a step-by-step presentation of n samples: the trace from zero, the membrane from rest or, with
        carry_membrane, from where the previous presentation of as many samples left it."""
        carried = self.carried if self.carry_membrane else None
        self._online = [carried if carried is not None and carried.shape[0] == n else None, None]  # membrane, trace

    def end_online(self) -> None:
        """End a step-by-step presentation (keeping the membrane for the next, with carry_membrane)."""
        self.carried = self._online[0] if self.carry_membrane else None
        self._online = [None, None]

    def online_step(self, pre: torch.Tensor, current: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(output spikes, output trace) [N, H] after one step of input `pre` [N, D] (or of its `current`, the
        product with the current weights, computed ahead): the LIF's dynamics (fflab.spiking.LIF, without its
        surrogate, which nothing here differentiates)."""
        state = self._online
        if current is None:
            current = pre @ self.weight.t()
        if self.lif is None:
            state[1] = out = torch.relu(current)
            return out, out
        beta, threshold, reset = self._lif_constants
        mem = current.clone() if state[0] is None else torch.add(current, state[0], alpha=beta)
        fired = mem > threshold
        out = fired.to(mem.dtype)
        state[0] = mem.masked_fill_(fired, 0.0) if reset == "zero" else mem.sub_(out, alpha=threshold)
        state[1] = trace_step(state[1], out, self.trace_kind, self.trace_decay)
        return out, state[1]

    @property
    def rests_silently(self) -> bool:
        """Whether rest steps (zero input) leave the units silent, only decaying the membrane: LIF units that reset
        to zero end every step at or below threshold, and mem <- beta mem stays there."""
        return self.lif is not None and self.lif.reset == "zero"

    def rest_online(self, steps: int) -> None:
        """`steps` silent rest steps of a layer that `rests_silently`: mem <- beta mem (+ its zero input)."""
        mem = self._online[0]
        if mem is not None:
            beta = self._lif_constants[0]
            for _ in range(steps):
                mem = beta * mem
            self._online[0] = mem

    @torch.no_grad()
    def learn_step(self, pre: torch.Tensor, post: torch.Tensor, target: torch.Tensor, lr: float) -> None:
        """Online plasticity: the update of one step, dW = m(post) post (outer) pre averaged over the samples,
        from its input `pre` [N, D], the output trace `post` [N, H] as it stands after the step (which also gives
        the third factor m), and the targets [N]; `update_direction` of a one-step presentation."""
        n = len(target)
        if self.top_k:
            m = self.third_factor_per_unit(post.unsqueeze(0), target)  # [N, H]
            post_m = post * m * torch.zeros_like(m).scatter_(1, post.topk(self.top_k, dim=1).indices, 1.0)
        elif self.third_factor == "sigmoid":
            post_m = post * self._sigmoid_factor(post.unsqueeze(0), target).unsqueeze(1)
        else:
            per_half = self._symmetric_factor(post.unsqueeze(0), target)  # [N, 2]
            post_m = (post.view(n, 2, -1) * per_half.unsqueeze(2)).view(n, -1)
        post_m = post_m.t() / n
        if self.eligibility_tau:  # E <- (1 - tau) E + tau dW, W += lr E: two passes over the weights' size
            self.eligibility.addmm_(post_m, pre, beta=1 - self.eligibility_tau, alpha=self.eligibility_tau)
            self.weight.add_(self.eligibility, alpha=lr)
        else:
            self.weight.addmm_(post_m, pre, alpha=lr)

    def _per_step_goodness(self, post: torch.Tensor) -> torch.Tensor:
        """The configured goodness of each step's trace [T, N, units] -> [T, N]."""
        return goodness_fn(self.goodness_name)(post.reshape(-1, post.shape[-1])).view(post.shape[:-1])

    def goodness(self, post: torch.Tensor) -> torch.Tensor:
        """Goodness per sample [N]: squared norm of the trace averaged over steps ([N, 2] halves if symmetric)."""
        if self.third_factor == "symmetric":
            halves = post.float().view(*post.shape[:-1], 2, self.out_features // 2).pow(2)
            return (halves.mean(-1) if self.goodness_name == "mean_squares" else halves.sum(-1)).mean(0)
        return self._per_step_goodness(post).mean(0)

    def probability(self, post: torch.Tensor) -> torch.Tensor:
        """The layer's probability that each sample is positive data [N]: sigmoid(s (G - theta)), or, symmetric,
        (G+ + eps) / (G+ + G- + 2 eps) (Hebbian_FFA's Symmetric_Probability.compute_probs, eps = sym_eps)."""
        g = self.goodness(post)
        if self.third_factor == "symmetric":
            a = g + self.sym_eps
            return a[:, 0] / a.sum(1)
        return torch.sigmoid(self.scale * (g - self.theta))

    def third_factor_per_unit(self, post: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """m [N, H]: the scalar (target - P) of each sample, with the constant (and, symmetric, per-half)
        gain that makes the Hebbian update equal to the FF loss's negative gradient for analog units.

        Symmetric: -dL/dG+ = (target - P) / (G+ + eps) and -dL/dG- = -(target - P) / (G- + eps), for
        L = BCE(P, target); the halves' gains differ, so neither can be dropped without turning the update.
        With p_clip, a sample whose P lies within p_clip of 0 or 1 adds nothing (the gradient of a BCE of P
        clamped to [p_clip, 1 - p_clip], as Hebbian_FFA's analog loss clamps it)."""
        if self.third_factor == "sigmoid":
            return self._sigmoid_factor(post, target).unsqueeze(1).expand(-1, self.out_features)
        return self._symmetric_factor(post, target).repeat_interleave(self.out_features // 2, dim=1)

    def _sigmoid_factor(self, post: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The sigmoid factor of each sample [N]: 2 s (target - P), divided by H for the mean-square goodness."""
        per_unit = 2.0 / (self.out_features if self.goodness_name == "mean_squares" else 1)
        p = self.probability(post)
        return self._clipped(self.scale * per_unit * (target - p.clamp(EPS, 1 - EPS)), p)

    def _symmetric_factor(self, post: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The symmetric factor of each sample's halves [N, 2]: 2 (target - P) / (G+ + eps) and
        -2 (target - P) / (G- + eps) (twice as large for the mean-square goodness, whose halves average H/2)."""
        a = self.goodness(post) + self.sym_eps  # [N, 2]: G+ + eps, G- + eps
        total = a.sum(1)
        p = a[:, 0] / total
        m = (8.0 / self.out_features if self.goodness_name == "mean_squares" else 2.0) * (target - p)
        if self.symmetric_rule == "notebook":  # its shared denominator is G+ + G- + eps, not + 2 eps
            m = m * total / (total - self.sym_eps)
        return self._clipped(m, p).unsqueeze(1) * a.reciprocal() * self.half_signs

    def _clipped(self, m: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """m with the samples whose P is within p_clip of 0 or 1 set to zero (no clipping when p_clip = 0)."""
        if not self.p_clip:
            return m
        return m * ((p >= self.p_clip) & (p <= 1 - self.p_clip)).to(m.dtype)

    def loss(self, post: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The FF loss the rule descends: binary cross-entropy of P against the targets (a report, not a graph)."""
        p = self.probability(post).clamp(EPS, 1 - EPS)
        return -(target * p.log() + (1 - target) * (1 - p).log()).mean()

    def update_direction(
        self,
        pre: torch.Tensor,
        post: torch.Tensor,
        target: torch.Tensor,
        gate: torch.Tensor | None = None,
        scored: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The weight change per unit learning rate [H, D], from traces [T, N, .], targets [N] and, if given,
        the postsynaptic gate [T, N, H] only. The third factor comes from the ungated trace's goodness: of all
        its steps, or of the steps `scored` [T', N, H] (the last presentation step's trace, say)."""
        steps, n = post.shape[0], post.shape[1]
        m = self.third_factor_per_unit(post if scored is None else scored, target)  # [N, H]
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
        self,
        pre: torch.Tensor,
        post: torch.Tensor,
        target: torch.Tensor,
        lr: float,
        gate: torch.Tensor | None = None,
        scored: torch.Tensor | None = None,
    ) -> None:
        self.apply_update(self.update_direction(pre, post, target, gate, scored), lr)

    @torch.no_grad()
    def apply_update(self, direction: torch.Tensor, lr: float) -> None:
        """W += lr dW, or, with an eligibility trace, E <- (1 - tau) E + tau dW and W += lr E."""
        self.weight.add_(self.through_eligibility(direction), alpha=lr)

    @torch.no_grad()
    def through_eligibility(self, direction: torch.Tensor) -> torch.Tensor:
        """dW as the weights receive it: dW itself, or the eligibility trace after taking dW in
        (E <- (1 - tau) E + tau dW, Hebbian_FFA's elasticity_trace)."""
        if not self.eligibility_tau:
            return direction
        return self.eligibility.mul_(1 - self.eligibility_tau).add_(direction, alpha=self.eligibility_tau)

    def forward_flops(self, steps: int) -> int:
        """Multiply-add FLOPs of one sample's input products over `steps` steps."""
        return 2 * steps * self.in_features * self.out_features

    def extra_repr(self) -> str:
        return (
            f"{self.in_features} -> {self.out_features}, neuron={self.neuron}, third_factor={self.third_factor}, "
            f"goodness={self.goodness_name}, trace={self.trace_kind}, post_gate={self.post_gate}, top_k={self.top_k}"
        )
