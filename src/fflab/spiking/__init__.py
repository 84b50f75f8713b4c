"""Spiking building blocks: LIF neurons, spike encoders and output traces (in snnTorch's habits:
neurons are modules that carry their own state; encoders and traces are plain functions)."""

from fflab.spiking.encoders import encode
from fflab.spiking.neurons import LIF, SURROGATES, spike, surrogate_derivative
from fflab.spiking.traces import trace

__all__ = ["LIF", "SURROGATES", "encode", "spike", "surrogate_derivative", "trace"]
