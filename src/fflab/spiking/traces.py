"""Output traces of spike trains [T, N, H], kept per step so that goodness and Hebbian updates can use them.

count      - the running spike count;
leaky      - a leaky integrator: tr = decay * tr + spk;
hard_leaky - reset to 1 on a spike, else decay: tr = spk + (1 - spk) * decay * tr (nearest-spike trace).
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
