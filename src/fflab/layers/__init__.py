"""Local learners: each FF layer owns its forward map, goodness and objective."""

from fflab.layers.base import FFLearner
from fflab.layers.dense import ACTIVATIONS, INITS, INPUT_NORMS, FFDense, normalize_direction

__all__ = ["ACTIVATIONS", "INITS", "INPUT_NORMS", "FFDense", "FFLearner", "normalize_direction"]
