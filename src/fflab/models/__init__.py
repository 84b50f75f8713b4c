"""Wirings of local learners, built by name from the model settings."""

from __future__ import annotations

from fflab.config import ModelSettings
from fflab.layers import FFDense
from fflab.models.feedforward import FFNetwork, LocalResult, predict_from_scores
from fflab.supervision import LabelEmbedding

__all__ = ["FFNetwork", "LocalResult", "build_model", "predict_from_scores"]


def build_ff(settings: ModelSettings, input_dim: int, num_classes: int) -> FFNetwork:
    """Hinton's supervised FF network: dense learners on label-embedded inputs."""
    embedding = LabelEmbedding(settings.label, num_classes, input_dim, settings.label_value)
    widths = [embedding.input_dim, *settings.hidden]
    layers = [
        FFDense(
            widths[i],
            widths[i + 1],
            activation=settings.activation,
            init=settings.init,
            input_norm=settings.input_norm,
            goodness=settings.goodness,
            theta=settings.theta,
            objective=settings.objective,
            loss=settings.loss,
            alpha=settings.alpha,
        )
        for i in range(len(settings.hidden))
    ]
    return FFNetwork(layers, embedding, settings.predict_layers)


MODEL_BUILDERS = {"ff": build_ff}


def build_model(settings: ModelSettings, input_dim: int, num_classes: int) -> FFNetwork:
    """Create the network named by `settings.kind` (a registry, as in timm)."""
    return MODEL_BUILDERS[settings.kind](settings, input_dim, num_classes)
