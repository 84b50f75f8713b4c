"""Leaky integrate-and-fire neurons with surrogate gradients.

Written small rather than taken from snnTorch: fflab needs one neuron model, its state and three
surrogates, and a dependency would bring its own training conventions. The dynamics per step are
snnTorch's Leaky neuron with reset_delay=False (the reset applies in the step that fired):

    mem = beta * mem + input
    spk = H(mem - threshold)                  (H: Heaviside step)
    mem = mem - spk * threshold               (reset by subtraction)   or   mem * (1 - spk)   (to zero)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from fflab.vocab import NEURON_RESETS


def _fast_sigmoid(x: torch.Tensor, slope: float) -> torch.Tensor:
    return x / (1 + slope * x.abs())  # derivative 1 / (1 + slope |x|)^2 (Zenke & Ganguli's SuperSpike)


def _atan(x: torch.Tensor, slope: float) -> torch.Tensor:
    return torch.atan(math.pi / 2 * slope * x) / math.pi  # derivative slope/2 / (1 + (pi/2 slope x)^2)


def _straight_through(x: torch.Tensor, slope: float) -> torch.Tensor:
    return x  # derivative 1


SURROGATES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "fast_sigmoid": _fast_sigmoid,
    "atan": _atan,
    "straight_through": _straight_through,
}


def surrogate_derivative(x: torch.Tensor, surrogate: str = "fast_sigmoid", slope: float = 25.0) -> torch.Tensor:
    """The surrogate's derivative at x = membrane - threshold: the pseudo-derivative of a spike with respect to
    its membrane potential, which a local learning rule can use without autograd."""
    if surrogate == "fast_sigmoid":
        return (1 + slope * x.abs()).pow(-2)
    if surrogate == "atan":
        return (slope / 2) / (1 + (math.pi / 2 * slope * x).pow(2))
    if surrogate == "straight_through":
        return torch.ones_like(x)
    raise ValueError(f"unknown surrogate {surrogate!r}; expected one of {sorted(SURROGATES)}")


def spike(x: torch.Tensor, surrogate: str = "fast_sigmoid", slope: float = 25.0) -> torch.Tensor:
    """H(x) in the forward pass; the derivative of a smooth surrogate in the backward pass.

    The smooth function s enters as s(x) - s(x).detach(), which is exactly zero in value, so the
    output is exactly 0 or 1 while its gradient is s'(x).
    """
    smooth = SURROGATES[surrogate](x, slope)
    return (x > 0).to(x.dtype) + (smooth - smooth.detach())


class LIF(nn.Module):
    """A layer of leaky integrate-and-fire neurons that keeps its membrane potential between steps.

    Call `reset_state()` before each new sample (or batch); `forward` advances one step; `run`
    simulates a whole input-current train [T, N, H] and returns the spikes [T, N, H].
    """

    def __init__(
        self,
        beta: float = 0.9,
        threshold: float = 1.0,
        reset: str = "subtract",
        surrogate: str = "fast_sigmoid",
        slope: float = 25.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"LIF beta (membrane decay per step) must be in [0, 1], got {beta}")
        if threshold <= 0:
            raise ValueError(f"LIF threshold must be positive, got {threshold}")
        if reset not in NEURON_RESETS:
            raise ValueError(f"unknown reset {reset!r}; expected one of {list(NEURON_RESETS)}")
        if surrogate not in SURROGATES:
            raise ValueError(f"unknown surrogate {surrogate!r}; expected one of {sorted(SURROGATES)}")
        self.beta, self.threshold, self.reset, self.surrogate, self.slope = beta, threshold, reset, surrogate, slope
        self.mem: torch.Tensor | None = None

    def reset_state(self) -> None:
        self.mem = None

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        return self._step(current)[0]

    def _step(self, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(spikes, membrane potential before the reset) of one step."""
        mem = current if self.mem is None else self.beta * self.mem + current
        spk = spike(mem - self.threshold, self.surrogate, self.slope)
        fired = spk.detach()  # the reset is not differentiated through, as in snnTorch's default
        self.mem = mem - fired * self.threshold if self.reset == "subtract" else mem * (1 - fired)
        return spk, mem

    def run(self, currents: torch.Tensor) -> torch.Tensor:
        """Spikes [T, N, H] for input currents [T, N, H], from a rested state."""
        return self.run_with_gate(currents, gate=False)[0]

    def run_with_gate(self, currents: torch.Tensor, gate: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Spikes [T, N, H] and, if `gate`, each step's surrogate derivative at its membrane potential."""
        self.reset_state()
        spikes, gates = [], []
        for c in currents:
            spk, mem = self._step(c)
            spikes.append(spk)
            if gate:
                gates.append(surrogate_derivative(mem.detach() - self.threshold, self.surrogate, self.slope))
        self.reset_state()
        return torch.stack(spikes), torch.stack(gates) if gate else None

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}, reset={self.reset}, surrogate={self.surrogate}"
