"""Spiking FF layer trained by surrogate gradient: linear synapses into LIF neurons over T steps.

Its activity is the spike train [N, T, H] (batch first, so a network slices positive and negative
rows as for analog layers); its goodness is the squared norm of the time-averaged output trace. The
FF loss reaches the weights through the surrogate derivative of each spike and back through the
layer's own time steps, never into the layer below (the network detaches its input).
"""

from __future__ import annotations

import torch
from torch import nn

from fflab.layers.base import FFLearner
from fflab.layers.dense import normalize_direction
from fflab.spiking import LIF, encode, trace
from fflab.vocab import INPUT_NORMS


class SpikingFFDense(FFLearner):
    """[analog input: normalise, encode] or [spike input: normalise] -> linear -> LIF over `steps` steps."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        steps: int = 8,
        encoder: str = "direct",
        gain: float = 1.0,
        beta: float = 0.9,
        threshold: float = 1.0,
        reset: str = "subtract",
        surrogate: str = "fast_sigmoid",
        slope: float = 25.0,
        trace_kind: str = "leaky",
        trace_decay: float = 0.9,
        input_norm: str = "rms",
        spike_input: bool = False,
        **learner_options,
    ) -> None:
        super().__init__(**learner_options)
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"unknown input_norm {input_norm!r}; expected one of {list(INPUT_NORMS)}")
        self.linear = nn.Linear(in_features, out_features)
        nn.init.kaiming_normal_(self.linear.weight, nonlinearity="relu")
        nn.init.zeros_(self.linear.bias)
        self.lif = LIF(beta, threshold, reset, surrogate, slope)
        self.steps, self.encoder, self.gain = steps, encoder, gain
        self.trace_kind, self.trace_decay, self.input_norm = trace_kind, trace_decay, input_norm
        self.spike_input = spike_input  # fed by a spiking layer (else by analog data it encodes itself)
        self.register_peer_mean(out_features)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Scale each sample's input to unit RMS (or length) over all its values: the layer above sees
        the pattern of activity, not how much of it there was (which is this layer's goodness)."""
        return normalize_direction(x.reshape(len(x), -1), self.input_norm).view_as(x)

    def currents(self, x: torch.Tensor) -> torch.Tensor:
        """Input currents [T, N, H] for analog input [N, D] or a spike train [N, T, D]."""
        if x.dim() == 2 and self.encoder != "direct":  # spike codes read raw values in [0, 1]
            x = encode(x.flatten(1).clamp(0.0, 1.0), self.encoder, self.steps, gain=self.gain).transpose(0, 1)
        x = self._normalize(x.flatten(1) if x.dim() == 2 else x)
        if x.dim() == 3:
            return self.linear(x.transpose(0, 1))
        return self.linear(x).unsqueeze(0).expand(self.steps, -1, -1)  # direct: one product for every step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif.run(self.currents(x)).transpose(0, 1)  # [N, T, H]

    def latent(self, h: torch.Tensor) -> torch.Tensor:
        """Firing rate of each unit (spikes per step) [N, H]."""
        return h.mean(1)

    def unit_goodness(self, h: torch.Tensor) -> torch.Tensor:
        return self._goodness(trace(h.transpose(0, 1), self.trace_kind, self.trace_decay).mean(0)).unsqueeze(1)

    def unit_activity(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean((0, 1))

    def forward_flops(self) -> int:
        """Multiply-add FLOPs of one input's currents: one product per step, or one in all for a direct code."""
        products = 1 if (self.encoder == "direct" and not self.spike_input) else self.steps
        return 2 * products * self.in_features * self.out_features

    def extra_repr(self) -> str:
        return (
            f"steps={self.steps}, encoder={self.encoder if not self.spike_input else 'spikes'}, "
            f"trace={self.trace_kind}, goodness={self.goodness_name}, loss={self.loss_name}"
        )
