"""The learner of a recurrent FF network: one hidden layer fed bottom-up, top-down and lateral inputs."""

from __future__ import annotations

import math

import torch
from torch import nn

from fflab.layers.base import FFLearner, confine
from fflab.layers.dense import ACTIVATIONS
from fflab.spiking import spike

WIRINGS = ("sum", "metalayer")
SOURCE_INITS = ("kaiming", "xavier", "orthogonal", "identity", "zeros")
# What a recurrent network takes goodness of: each counted step's activity (then averaged over the window), or
# the activity averaged over the window, i.e. a firing rate for spiking layers (one step's spikes are binary).
SCORES = ("steps", "window_mean")


def rms_normalize(v: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit root-mean-square (a zero row stays zero)."""
    return v * torch.rsqrt(v.pow(2).mean(1, keepdim=True) + eps)


def init_block(
    weight: torch.Tensor, scheme: str, activation: str, fan_in: int | None = None, fan_out: int | None = None
) -> None:
    """Initialise one source's block of weights in place; `fan_in` is the inputs a unit really sees and
    `fan_out` the units an input reaches (fewer than the block's columns and rows for a locally connected
    source)."""
    gain = nn.init.calculate_gain(activation if activation in ("relu", "tanh", "sigmoid") else "linear")
    fan_in, fan_out = fan_in or weight.shape[1], fan_out or weight.shape[0]
    with torch.no_grad():
        if scheme == "kaiming":
            weight.normal_(0.0, gain / math.sqrt(fan_in))
        elif scheme == "xavier":
            bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
            weight.uniform_(-bound, bound)
        elif scheme == "orthogonal":
            nn.init.orthogonal_(weight, gain=gain)
        elif scheme == "identity":
            weight.zero_()
            n = min(weight.shape)
            weight[:n, :n] += torch.eye(n)
        elif scheme == "zeros":
            weight.zero_()
        else:
            raise ValueError(f"unknown initialisation {scheme!r}; expected one of {list(SOURCE_INITS)}")


class RecurrentLayer(FFLearner):
    """One hidden layer of the recurrent network: a local learner with three input sources.

    wiring "sum":       computed = act(W_up u_up + s * W_down u_down + W_lat u_lat + b), with the three
                        blocks stored side by side in one matrix (one product per step);
    wiring "metalayer": computed = m_ud * (unit_up(u_up) + unit_down(u_down)) + m_self * unit_lat(u_lat),
                        each unit its own linear map and activation.
    u_* are the RMS-normalised sources; s is `top_down_sign` (negative in the inverted variant). Without
    `lateral`, the sum wiring has no W_lat (u_lat is ignored).
    `masks` (units x inputs, one per source or None) restrict sources to local receptive fields: Hinton's
    (2022) CIFAR-10 nets are this wiring over locally connected maps.

    With `spiking` settings (threshold, surrogate, slope) the layer is a population of LIF neurons:
    its state is the membrane potential, the activation is dropped (the wirings compute input
    currents; a metalayer mixes its units' currents), the damping is the membrane's leak
    (mem = d * mem + (1 - d) * current) and the activity it emits is its spikes, with a surrogate
    derivative for its own loss and reset by subtraction.
    """

    def __init__(
        self,
        up_dim: int,
        down_dim: int,
        width: int,
        *,
        wiring: str = "sum",
        activation: str = "relu",
        inits: tuple[str, str, str] = ("kaiming", "kaiming", "orthogonal"),
        top_down_sign: float = 1.0,
        mix: tuple[float, float] = (0.7, 0.3),
        spiking: tuple[float, str, float] | None = None,
        masks: tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None] | None = None,
        lateral: bool = True,
        **learner_options,
    ) -> None:
        super().__init__(**learner_options)
        self.spiking = spiking  # (threshold, surrogate, slope) of LIF neurons; None: analog units
        if wiring not in WIRINGS:
            raise ValueError(f"unknown wiring {wiring!r}; expected one of {list(WIRINGS)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
        self.wiring, self.activation = wiring, activation
        self._act = ACTIVATIONS[activation] if spiking is None else (lambda v: v)  # LIF: currents, no activation
        if not lateral and wiring != "sum":
            raise ValueError("a layer without a lateral source needs the 'sum' wiring")
        self.dims = (up_dim, down_dim, width if lateral else 0)
        self.width = width
        self.top_down_sign = float(top_down_sign)
        self.mix = tuple(float(m) for m in mix)
        masks = masks or (None, None, None)
        for mask, d in zip(masks, self.dims, strict=True):
            if mask is not None and tuple(mask.shape) != (width, d):
                raise ValueError(f"a source mask must be {width}x{d} (units x inputs), got {tuple(mask.shape)}")
        fans = [(None, None) if m is None else (int(m.sum(1).max()), int(m.sum(0).max())) for m in masks]
        if wiring == "sum":
            self.linear = nn.Linear(sum(self.dims), width)
            nn.init.zeros_(self.linear.bias)
            for block, scheme, fan in zip(self._blocks(self.linear.weight), inits, fans, strict=True):
                if block.numel():
                    init_block(block, scheme, activation, *fan)
            if any(m is not None for m in masks):
                blocks = [
                    torch.ones(width, d, dtype=torch.bool) if m is None else m
                    for m, d in zip(masks, self.dims, strict=True)
                ]
                confine(self, self.linear.weight, torch.cat(blocks, 1), "mask")
        else:
            self.units = nn.ModuleList(nn.Linear(d, width) for d in self.dims)
            for i, (unit, scheme, fan, mask) in enumerate(zip(self.units, inits, fans, masks, strict=True)):
                init_block(unit.weight, scheme, activation, *fan)
                nn.init.zeros_(unit.bias)
                if mask is not None:
                    confine(self, unit.weight, mask, f"mask{i}")
        self.register_peer_mean(width)

    def _blocks(self, weight: torch.Tensor) -> list[torch.Tensor]:
        """Views of the bottom-up, top-down and lateral column blocks of the fused weight."""
        up, down, _ = self.dims
        return [weight[:, :up], weight[:, up : up + down], weight[:, up + down :]]

    @property
    def in_features(self) -> int:
        return sum(self.dims)

    @property
    def out_features(self) -> int:
        return self.width

    def bottom_up(self, u_up: torch.Tensor) -> torch.Tensor:
        """The bottom-up term alone (for a static input it is the same at every step)."""
        if self.wiring == "sum":
            return u_up @ self._blocks(self.linear.weight)[0].t()
        return self.units[0](u_up)

    def forward(
        self, u_up: torch.Tensor | None, u_down: torch.Tensor, u_lat: torch.Tensor, up_term=None
    ) -> torch.Tensor:
        """The computed (undamped) activity from normalised sources; `up_term` replaces u_up when precomputed."""
        u_down = self.top_down_sign * u_down
        if self.wiring == "sum":
            w = self.linear.weight
            sources = [u_down, u_lat] if self.dims[2] else [u_down]
            if up_term is None:
                return self._act(torch.cat([u_up, *sources], 1) @ w.t() + self.linear.bias)
            rest = torch.cat(sources, 1) @ w[:, self.dims[0] :].t()
            return self._act(up_term + rest + self.linear.bias)
        up = self._act(self.bottom_up(u_up) if up_term is None else up_term)
        down, lat = self._act(self.units[1](u_down)), self._act(self.units[2](u_lat))
        return self.mix[0] * (up + down) + self.mix[1] * lat

    def emit(self, state: torch.Tensor) -> torch.Tensor:
        """The activity this layer shows its neighbours and its loss: the state itself, or the spikes of a
        membrane potential (Heaviside forward, surrogate derivative backward)."""
        if self.spiking is None:
            return state
        threshold, surrogate, slope = self.spiking
        return spike(state - threshold, surrogate, slope)

    def settle(self, state: torch.Tensor) -> torch.Tensor:
        """The state carried into the next step: spiking units subtract the threshold where they fired."""
        if self.spiking is None:
            return state
        return state - (state > self.spiking[0]).to(state.dtype) * self.spiking[0]

    def flops(self) -> int:
        """Matrix-multiply FLOPs of one step for one input row."""
        return 2 * self.width * sum(self.dims)
