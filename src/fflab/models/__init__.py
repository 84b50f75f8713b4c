"""Wirings of local learners (and the backprop baseline), built by their family from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fflab.errors import ConfigError
from fflab.families import get_family
from fflab.models.backprop import BackpropNetwork
from fflab.models.feedforward import FFNetwork, LocalResult, all_but_first, evaluating
from fflab.models.hebbian import HebbianFFNetwork
from fflab.models.prediction import Predictions, predict_from_scores
from fflab.models.readout import LinearReadout
from fflab.models.recurrent import RecurrentFFNetwork

if TYPE_CHECKING:
    from fflab.config import Config

__all__ = [
    "BackpropNetwork",
    "FFNetwork",
    "HebbianFFNetwork",
    "LinearReadout",
    "LocalResult",
    "Predictions",
    "RecurrentFFNetwork",
    "all_but_first",
    "build_model",
    "evaluating",
    "predict_from_scores",
]


def build_model(cfg: Config, input_dim: int, num_classes: int, input_shape: tuple[int, ...] | None = None):
    """The untrained network `cfg.model.kind` names, built by its family (a registry, as in timm) for inputs of
    `input_dim` values (`input_shape` (C, H, W) for image layers and label channels) and `num_classes` classes."""
    family = get_family(cfg.model.kind)
    try:
        model = family.build(cfg, input_dim, num_classes, input_shape)
    except ConfigError:
        raise
    except ValueError as err:  # a layer rejecting its settings for this data (widths, label sizes, ...)
        raise ConfigError(f"model ({family.name}, {input_dim} inputs, {num_classes} classes): {err}") from err
    model.kind = family.name
    return model
