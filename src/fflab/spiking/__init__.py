"""Spiking building blocks: LIF neurons, spike encoders and output traces (in snnTorch's habits:
neurons are modules that carry their own state; encoders and traces are plain functions)."""

from fflab.spiking.encoders import ENCODERS, encode
from fflab.spiking.neurons import LIF, NEURON_RESETS, SURROGATES, spike, surrogate_derivative
from fflab.spiking.traces import TRACES, trace

__all__ = [
    "ENCODERS",
    "LIF",
    "NEURON_RESETS",
    "SURROGATES",
    "TRACES",
    "encode",
    "spike",
    "surrogate_derivative",
    "trace",
]
