"""The learner of a recurrent FF network: one hidden layer fed bottom-up, top-down and lateral inputs."""

from __future__ import annotations

import math

import torch
from torch import nn

from fflab.layers.base import FFLearner
from fflab.layers.dense import ACTIVATIONS
from fflab.layers.local import TiledLocalLinear
from fflab.spiking import spike
from fflab.vocab import SOURCE_INITS, WIRINGS


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
                        blocks stored side by side in one matrix (one product per step; local sources:
                        see below);
    wiring "metalayer": computed = m_ud * (unit_up(u_up) + unit_down(u_down)) + m_self * unit_lat(u_lat),
                        each unit its own linear map and activation.
    u_* are the RMS-normalised sources; s is `top_down_sign` (negative in the inverted variant). Without
    `lateral`, the sum wiring has no W_lat (u_lat is ignored).
    `masks` (units x inputs, one per source or None) restrict sources to local receptive fields: Hinton's
    (2022) CIFAR-10 nets are this wiring over locally connected maps. The units then form a `map_shape`
    (C, H, W) map and the masked sources run as tiled products (`TiledLocalLinear`): in the sum wiring one
    for the bottom-up source and one for the others side by side, each unit of a metalayer its own.

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
        map_shape: tuple[int, int, int] | None = None,
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
        self.local = any(m is not None for m in masks)
        if self.local and (map_shape is None or math.prod(map_shape) != width):
            raise ValueError(f"a layer with local sources needs the (C, H, W) map of its {width} units")
        fans = [(None, None) if m is None else (int(m.sum(1).max()), int(m.sum(0).max())) for m in masks]
        if wiring == "sum":
            linear = nn.Linear(sum(self.dims), width)
            nn.init.zeros_(linear.bias)
            for block, scheme, fan in zip(self._blocks(linear.weight), inits, fans, strict=True):
                if block.numel():
                    init_block(block, scheme, activation, *fan)
            if self.local:  # tiled products: the bottom-up source alone (static inputs reuse it), and the rest
                full = [
                    torch.ones(width, d, dtype=torch.bool) if m is None else m
                    for m, d in zip(masks, self.dims, strict=True)
                ]
                weight, up = linear.weight.detach(), self.dims[0]
                self.up = TiledLocalLinear(weight[:, :up], full[0], map_shape)
                self.rest = TiledLocalLinear(weight[:, up:], torch.cat(full[1:], 1), map_shape)
                self.bias = nn.Parameter(linear.bias.detach().clone())
            else:
                self.linear = linear
        else:
            units = [nn.Linear(d, width) for d in self.dims]
            for unit, scheme, fan in zip(units, inits, fans, strict=True):
                init_block(unit.weight, scheme, activation, *fan)
                nn.init.zeros_(unit.bias)
            self.units = nn.ModuleList(
                unit if mask is None else TiledLocalLinear.from_linear(unit, mask, map_shape)
                for unit, mask in zip(units, masks, strict=True)
            )
        self.register_peer_mean(width)

    def _blocks(self, weight: torch.Tensor) -> list[torch.Tensor]:
        """Views of the bottom-up, top-down and lateral column blocks of the fused weight."""
        up, down, _ = self.dims
        return [weight[:, :up], weight[:, up : up + down], weight[:, up + down :]]

    def _dense_sources(self, name: str) -> list[torch.Tensor]:
        """Each source's `weight` or `mask` (`name`) as a dense units x inputs matrix, whatever the layout it is
        stored in; a source that is not local has no mask (all ones)."""

        def dense(product: nn.Module) -> torch.Tensor:
            if isinstance(product, TiledLocalLinear):
                return product.to_dense(getattr(product, name))
            return product.weight if name == "weight" else torch.ones_like(product.weight, dtype=torch.bool)

        if self.wiring == "metalayer":
            return [dense(unit) for unit in self.units]
        return self._blocks(torch.cat([dense(p) for p in ([self.up, self.rest] if self.local else [self.linear])], 1))

    def source_weights(self) -> list[torch.Tensor]:
        """The bottom-up, top-down and lateral weights as dense (units x inputs) matrices."""
        return self._dense_sources("weight")

    def fan_out(self) -> list[torch.Tensor]:
        """How many of this layer's units each input of the bottom-up, top-down and lateral sources reaches (the
        receptive fields' coverage for local sources, every unit otherwise; empty for a missing source)."""
        return [mask.sum(0) for mask in self._dense_sources("mask")]

    @property
    def in_features(self) -> int:
        return sum(self.dims)

    @property
    def out_features(self) -> int:
        return self.width

    def bottom_up(self, u_up: torch.Tensor) -> torch.Tensor:
        """The bottom-up term alone (for a static input it is the same at every step)."""
        if self.wiring == "sum":
            return self.up(u_up) if self.local else u_up @ self._blocks(self.linear.weight)[0].t()
        return self.units[0](u_up)

    def forward(
        self, u_up: torch.Tensor | None, u_down: torch.Tensor, u_lat: torch.Tensor, up_term=None
    ) -> torch.Tensor:
        """The computed (undamped) activity from normalised sources; `up_term` replaces u_up when precomputed."""
        u_down = self.top_down_sign * u_down
        if self.wiring == "sum":
            sources = [u_down, u_lat] if self.dims[2] else [u_down]
            if self.local:
                up = self.up(u_up) if up_term is None else up_term
                return self._act(up + self.rest(torch.cat(sources, 1)) + self.bias)
            w = self.linear.weight
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
        """Matrix-multiply FLOPs of one step for one input row, as executed."""
        if not self.local:
            return 2 * self.width * sum(self.dims)
        products = [self.up, self.rest] if self.wiring == "sum" else self.units
        return sum(2 * p.weight.numel() for p in products)

    def up_flops(self) -> int:
        """The bottom-up source's share of `flops`."""
        if not self.local:
            return 2 * self.width * self.dims[0]
        return 2 * (self.up if self.wiring == "sum" else self.units[0]).weight.numel()

    def upgrade_state(self, state: dict, prefix: str) -> bool:
        """A checkpoint from before the tiled products holds one fused dense weight: split it by source (the
        tiled products then convert their parts)."""
        fused = [prefix + "linear.weight", prefix + "linear.bias"]
        if not (self.local and self.wiring == "sum" and all(k in state for k in fused)):
            return False
        weight, up = state.pop(fused[0]), self.dims[0]
        state[prefix + "up.weight"], state[prefix + "rest.weight"] = weight[:, :up], weight[:, up:]
        state[prefix + "bias"] = state.pop(fused[1])
        return True
