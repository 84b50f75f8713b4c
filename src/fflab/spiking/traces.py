"""Output traces of spike trains [T, N, H], kept per step so that goodness and Hebbian updates can use them.

count      - the running spike count;
leaky      - a leaky integrator: tr = decay * tr + spk;
hard_leaky - reset to 1 on a spike, else decay: tr = spk + (1 - spk) * decay * tr (nearest-spike trace);
average    - a moving average of the spikes, bounded in [0, 1]: tr = decay * tr + (1 - decay) * spk
             (Hebbian_FFA's LI_Trace), i.e. (1 - decay) times the leaky trace.
"""

from __future__ import annotations

import torch

from fflab.vocab import TRACES


def trace(spikes: torch.Tensor, kind: str = "leaky", decay: float = 0.9) -> torch.Tensor:
    """The trace [T, N, H] of spikes [T, N, H] (time first), starting from zero."""
    if kind == "count":
        return spikes.cumsum(0)
    if kind not in TRACES:
        raise ValueError(f"unknown trace {kind!r}; expected one of {list(TRACES)}")
    if kind == "average":
        return (1 - decay) * trace(spikes, "leaky", decay)
    if kind == "leaky":
        # tr_t = sum_{s <= t} decay^(t - s) spk_s: one product with a lower-triangular kernel, not T steps.
        steps = spikes.shape[0]
        t = torch.arange(steps, dtype=spikes.dtype, device=spikes.device)
        lag = t.view(-1, 1) - t.view(1, -1)
        kernel = torch.where(lag >= 0, decay ** lag.clamp(min=0), torch.zeros((), dtype=spikes.dtype))
        return (kernel @ spikes.reshape(steps, -1)).view(spikes.shape)
    out, tr = [], torch.zeros_like(spikes[0])
    for s in spikes:
        tr = s + (1 - s) * decay * tr
        out.append(tr)
    return torch.stack(out)


def trace_flops(steps: int, width: int, kind: str = "leaky") -> int:
    """Matrix-multiply FLOPs of `trace` over `steps` steps of `width` values for one sample: the leaky (and average)
    trace's product with its [T, T] kernel; the others take none."""
    return 2 * steps * steps * width if kind in ("leaky", "average") else 0


def trace_step(tr: torch.Tensor | None, spikes: torch.Tensor, kind: str = "leaky", decay: float = 0.9) -> torch.Tensor:
    """One step of `trace`: the trace after `spikes` [N, H] given the trace before (None: from zero)."""
    if kind not in TRACES:
        raise ValueError(f"unknown trace {kind!r}; expected one of {list(TRACES)}")
    if tr is None:
        tr = torch.zeros_like(spikes)
    if kind == "count":
        return tr + spikes
    if kind == "leaky":
        return decay * tr + spikes
    if kind == "average":
        return decay * tr + (1 - decay) * spikes
    return spikes + (1 - spikes) * decay * tr
