"""The learner of a recurrent FF network: one hidden layer fed bottom-up, top-down and lateral inputs."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from fflab.layers.base import FFLearner
from fflab.layers.dense import ACTIVATIONS
from fflab.layers.local import TiledLocalLinear
from fflab.spiking import spike
from fflab.vocab import BIAS_INITS, SOURCE_INITS, SOURCE_NORMS, WIRINGS


def rms_normalize(v: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit root-mean-square (a zero row stays zero)."""
    return v * torch.rsqrt(v.pow(2).mean(1, keepdim=True) + eps)


def length_normalize(v: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Each row divided by its length plus 1e-4: x / (x.norm(2, 1, keepdim=True) + 1e-4), the input scaling of
    mpezeshki's and Nicola97's Layer (a zero row stays zero)."""
    return v / (v.norm(2, 1, keepdim=True) + eps)


def normalize_source(v: torch.Tensor, mode: str) -> torch.Tensor:
    """A source scaled as recurrent.source_norm says: unit RMS, unit length (plus 1e-4) or as it is."""
    if mode == "rms":
        return rms_normalize(v)
    if mode == "length":
        return length_normalize(v)
    if mode == "none":
        return v
    raise ValueError(f"unknown source norm {mode!r}; expected one of {list(SOURCE_NORMS)}")


def init_block(
    weight: torch.Tensor, scheme: str, activation: str, fan_in: int | None = None, fan_out: int | None = None
) -> None:
    """Initialise one source's block of weights in place; `fan_in` is the inputs a unit really sees and
    `fan_out` the units an input reaches (fewer than the block's columns and rows for a locally connected
    source)."""
    gain = nn.init.calculate_gain(activation if activation in ("relu", "tanh", "sigmoid") else "linear")
    fan_in, fan_out = fan_in or weight.shape[1], fan_out or weight.shape[0]
    if not weight.numel():  # a source of width 0 (the top layer's, when the label enters with the input)
        return
    with torch.no_grad():
        if scheme == "torch":  # nn.Linear's own: kaiming_uniform_(a=sqrt(5)), i.e. U(+-1 / sqrt(fan_in))
            bound = 1.0 / math.sqrt(fan_in)
            weight.uniform_(-bound, bound)
        elif scheme == "he_uniform":  # nn.init.kaiming_uniform_(w, nonlinearity="relu")
            bound = math.sqrt(6.0 / fan_in)
            weight.uniform_(-bound, bound)
        elif scheme in ("he_normal", "he_normal_x3"):
            weight.normal_(0.0, (3.0 if scheme == "he_normal_x3" else 1.0) * math.sqrt(2.0 / fan_in))
        elif scheme == "uniform_0.05":
            weight.uniform_(-0.05, 0.05)
        elif scheme == "orthogonal_sqrt2":
            nn.init.orthogonal_(weight, gain=math.sqrt(2.0))
        elif scheme == "kaiming":
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


def torch_bias(width: int, fan_in: int) -> torch.Tensor:
    """A bias as nn.Linear(fan_in, width) initialises it: U(+-1 / sqrt(fan_in)), zero for a source of width 0."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return torch.empty(width).uniform_(-bound, bound)


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

    wiring "populations" (spiking only; Nicola97's spiking MetaLayer) gives each source its own linear map and
    its own LIF population (snnTorch's Leaky: mem = beta * mem + current - reset * threshold, the reset the
    previous step's spike, detached), and emits the mixed spikes m_ud * (s_up + s_down) + m_self * s_lat. Its
    state is those mixed spikes: its membranes start at rest at every network step (`populations`).

    `bias_init` "torch" gives every source a bias of its own, U(+-1 / sqrt(source width)) as nn.Linear makes
    it; the sum wiring then adds b_up + s * b_down + b_lat (and-rewsmith's three nn.Linear, the top-down one
    negated with its input); "none" gives the layer no bias (and-rewsmith's F.linear calls until June 2024).
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
        bias_init: str = "zeros",
        beta: float = 0.9,
        **learner_options,
    ) -> None:
        super().__init__(**learner_options)
        self.spiking = spiking  # (threshold, surrogate, slope) of LIF neurons; None: analog units
        self.beta = float(beta)  # membrane decay of the "populations" wiring
        if wiring not in WIRINGS:
            raise ValueError(f"unknown wiring {wiring!r}; expected one of {list(WIRINGS)}")
        if bias_init not in BIAS_INITS:
            raise ValueError(f"unknown bias init {bias_init!r}; expected one of {list(BIAS_INITS)}")
        if wiring == "populations" and spiking is None:
            raise ValueError("the 'populations' wiring is made of LIF populations: it needs spiking settings")
        if bias_init != "zeros" and masks is not None and any(m is not None for m in masks):
            raise ValueError(f"bias_init {bias_init!r} is for dense sources")
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
        self.source_biases = wiring == "sum" and bias_init == "torch"
        if wiring == "sum":
            linear = nn.Linear(sum(self.dims), width)
            nn.init.zeros_(linear.bias)
            if bias_init == "none":
                linear.bias = None
            for block, scheme, fan in zip(self._blocks(linear.weight), inits, fans, strict=True):
                if block.numel():
                    init_block(block, scheme, activation, *fan)
            if self.source_biases:  # three biases, each as nn.Linear(source width, width) initialises its own
                up, down, lat = (torch_bias(width, d) for d in self.dims)
                with torch.no_grad():
                    linear.bias.copy_(up)
                # a source of width 0 has no nn.Linear in the original, so no bias
                self.bias_down = nn.Parameter(down) if self.dims[1] else None
                self.bias_lat = nn.Parameter(lat) if self.dims[2] else None
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
            with warnings.catch_warnings():  # nn.Linear(0, width), the top's source when the label is in the input
                warnings.filterwarnings("ignore", "Initializing zero-element tensors is a no-op")
                units = [nn.Linear(d, width) for d in self.dims]
            for unit, scheme, fan, d in zip(units, inits, fans, self.dims, strict=True):
                init_block(unit.weight, scheme, activation, *fan)
                with torch.no_grad():
                    unit.bias.copy_(torch_bias(width, d) if bias_init == "torch" else torch.zeros(width))
                if bias_init == "none":
                    unit.bias = None
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

        if self.wiring != "sum":
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

    def _sum_bias(self) -> torch.Tensor:
        """The sum wiring's bias: one, or b_up + s * b_down + b_lat with one bias per source."""
        bias = self.linear.bias
        if bias is None:
            return 0.0
        if self.source_biases and self.bias_down is not None:
            bias = bias + self.top_down_sign * self.bias_down
        if self.source_biases and self.bias_lat is not None:
            bias = bias + self.bias_lat
        return bias

    def forward(
        self,
        u_up: torch.Tensor | None,
        u_down: torch.Tensor,
        u_lat: torch.Tensor,
        up_term=None,
        mem: torch.Tensor | None = None,
        repeat: int = 1,
    ) -> torch.Tensor:
        """The computed (undamped) activity from normalised sources; `up_term` replaces u_up when precomputed.
        `mem` and `repeat`: see `populations`."""
        u_down = self.top_down_sign * u_down
        if self.wiring == "populations":
            return self.populations(u_up, u_down, u_lat, up_term, mem, repeat)[0]
        if self.wiring == "sum":
            sources = [u_down, u_lat] if self.dims[2] else [u_down]
            if self.local:
                up = self.up(u_up) if up_term is None else up_term
                return self._act(up + self.rest(torch.cat(sources, 1)) + self.bias)
            w = self.linear.weight
            if up_term is None:
                return self._act(torch.cat([u_up, *sources], 1) @ w.t() + self._sum_bias())
            rest = torch.cat(sources, 1) @ w[:, self.dims[0] :].t()
            return self._act(up_term + rest + self._sum_bias())
        up = self._act(self.bottom_up(u_up) if up_term is None else up_term)
        down, lat = self._act(self.units[1](u_down)), self._act(self.units[2](u_lat))
        return self.mix[0] * (up + down) + self.mix[1] * lat

    def populations(
        self,
        u_up: torch.Tensor | None,
        u_down: torch.Tensor,
        u_lat: torch.Tensor,
        up_term=None,
        mem: torch.Tensor | None = None,
        repeat: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixed spikes, membranes [N, 3 W]) of the "populations" wiring's next iteration on fixed inputs (u_down
        already signed): each source's current feeds its own LIF population, from rest (`mem` None) or from the
        membranes of the previous iteration on the same inputs, as snnTorch's Leaky (reset_delay, the default):
        mem' = beta * mem + current - H(mem - threshold) * threshold, spikes H(mem' - threshold).

        Nicola97's MetaLayer.train runs its populations `epochs` times on one step's inputs, an optimiser step
        after each, and backpropagates each iteration's loss through the whole membrane history. Its input held
        fixed, iteration k's membrane holds beta^(k-j) of iteration j's current, so that history gives the
        weights (1 - beta^k) / (1 - beta) times the gradient of one iteration: `repeat` = k scales the
        current's gradient by that factor, the same gradient without keeping k graphs."""
        threshold, surrogate, slope = self.spiking
        currents = [self.bottom_up(u_up) if up_term is None else up_term, self.units[1](u_down), self.units[2](u_lat)]
        olds = [None] * 3 if mem is None else list(mem.split(self.width, 1))
        scale = (1.0 - self.beta**repeat) / (1.0 - self.beta) if self.beta < 1.0 else float(repeat)
        spikes, mems = [], []
        for current, old in zip(currents, olds, strict=True):
            if scale != 1.0:  # the value of `current`, the gradient of `scale` times it
                current = scale * current - (scale - 1.0) * current.detach()
            if old is None:
                m = current
            else:
                old = old.detach()
                m = self.beta * old + current - (old > threshold).to(old.dtype) * threshold
            spikes.append(spike(m - threshold, surrogate, slope))
            mems.append(m)
        mixed = self.mix[0] * (spikes[0] + spikes[1]) + self.mix[1] * spikes[2]
        return mixed, torch.cat(mems, 1)

    def emit(self, state: torch.Tensor) -> torch.Tensor:
        """The activity this layer shows its neighbours and its loss: the state itself, or the spikes of a
        membrane potential (Heaviside forward, surrogate derivative backward); a "populations" layer's state is
        already its mixed spikes."""
        if self.spiking is None or self.wiring == "populations":
            return state
        threshold, surrogate, slope = self.spiking
        return spike(state - threshold, surrogate, slope)

    def settle(self, state: torch.Tensor) -> torch.Tensor:
        """The state carried into the next step: spiking units subtract the threshold where they fired."""
        if self.spiking is None or self.wiring == "populations":
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
