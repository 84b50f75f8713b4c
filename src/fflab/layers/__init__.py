"""Local learners: each FF layer owns its forward map, goodness and objective."""

from fflab.layers.base import FFLearner
from fflab.layers.dense import ACTIVATIONS, FFDense, normalize_direction

__all__ = ["ACTIVATIONS", "FFDense", "FFLearner", "normalize_direction"]
