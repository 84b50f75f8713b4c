"""Numerical health of training: a run whose loss, goodness or weights stop being numbers stops with an error.

A quantity is unhealthy when it is not finite (NaN, infinite) or when its size is beyond LIMIT. No healthy run
comes near that: the losses and goodness of the shipped configs stay below a hundred, and weights start below 1
and are moved by steps of about the learning rate. A run with much too high a learning rate gets there in a few
steps (digits at lr 1e8: a loss of 1e17 in the first epoch, after which every unit is silent and the loss stays
flat), often without ever making a NaN.

The check costs no extra wait for the device. The trainer already brings each step's loss and goodness to the
host for its epoch statistics, so their running sums are checked where they are, every CHECK_EVERY steps and at
the epoch's end. The weights are read at the same moments: one reduction per parameter, and one transfer for all.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from fflab.errors import DivergedError

LIMIT = 1e12  # beyond this, a loss, goodness or weight has run away
CHECK_EVERY = 256  # steps between checks within an epoch (and one at its end)
STATISTICS = ("loss", "positive goodness", "negative goodness")  # the rows of the trainer's epoch sums


def healthy(value: float) -> bool:
    return abs(value) <= LIMIT  # False for NaN too


def describe(value: float) -> str:
    """What happened to a quantity: 'became NaN', 'became infinite', 'reached 1.7e+17 (beyond 1e+12 ...)'."""
    if math.isnan(value):
        return "became NaN"
    if math.isinf(value):
        return f"became {'-' if value < 0 else ''}infinite"
    return f"reached {value:.3g} (beyond {LIMIT:.0e}, which no healthy run reaches)"


def diverged(epoch: int, where: str, layer: int | None, subject: str, quantity: str, value: float) -> DivergedError:
    """DivergedError: 'training diverged in epoch 2 (checked after step 256 of 600): layer 1's loss became NaN'."""
    return DivergedError(
        f"training diverged in epoch {epoch}{where}: {subject}'s {quantity} {describe(value)}",
        epoch=epoch,
        layer=layer,
        quantity=quantity.split(" (")[0],
        value=value,
    )


def check_statistics(
    means: torch.Tensor, epoch: int, where: str = "", slot_name: Callable[[int], str] = "layer {}".format
) -> None:
    """DivergedError for the first unhealthy mean [3, slots] (loss, positive and negative goodness), lowest slot
    first. `means` is on the host (the trainer's epoch sums divided by the rows seen)."""
    values = means.tolist()
    for j in range(means.shape[1]):
        for quantity, row in zip(STATISTICS, values, strict=True):
            if not healthy(row[j]):
                raise diverged(epoch, where, j, slot_name(j), quantity, row[j])


def check_weights(model: torch.nn.Module, epoch: int, where: str = "") -> None:
    """DivergedError for the first parameter of `model` holding a NaN, an infinity or a value beyond LIMIT."""
    named = [(name, p) for name, p in model.named_parameters() if p.numel()]
    if not named:
        return
    extremes = torch.stack([torch.stack(torch.aminmax(p.detach())).float() for _, p in named])
    for (name, _), (low, high) in zip(named, extremes.tolist(), strict=True):
        value = low if math.isnan(low) or abs(low) > abs(high) else high
        if not healthy(value):
            raise diverged(epoch, where, *_owner(name), value)


def _owner(name: str) -> tuple[int | None, str, str]:
    """(layer, subject, quantity) of a parameter: 'layers.1.linear.weight' -> (1, 'layer 1', 'weights
    (linear.weight)'); a parameter outside the layers is its own subject ('readout.linear.weight')."""
    parts = name.split(".")
    kind = "weights" if parts[-1] == "weight" else "parameters"
    if len(parts) > 2 and parts[0] == "layers" and parts[1].isdigit():
        rest = ".".join(parts[2:])
        return int(parts[1]), f"layer {parts[1]}", kind if rest == "weight" else f"{kind} ({rest})"
    return None, name, "values"
