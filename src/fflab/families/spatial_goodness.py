"""Spatial goodness (kind "spatial-goodness"): a chain of convolutional learners that score classes by spatial goodness
patches, built from the description of adaptive spatial goodness encoding (ASGE; Gong, Staszewski & Xu, arXiv
2509.12394). ASGE's code (github.com/KAI-Laboratory/ASGE) could not be read here, so this is fflab's reading of the
paper's text, not a reproduction of the original (docs/notes/2026-12-asge.md lists what was read and assumed).

A learner (fflab.layers.spatial_goodness.SpatialGoodnessConv2d) is conv -> ReLU -> pooling (RMS pooling in the
paper) on its detached input; its goodness vector holds the mean square of each channel's activity in each of P x P
patches, a fixed random affine map turns it into class scores, and its loss is the cross-entropy of those scores
(fflab's competitive loss). Unlike channel-wise competitive FF, no channel belongs to a class, so the widths need not
be multiples of the class count. Each learner after the first takes its input layer-normalised over channels at each
position (the paper's block ends in a LayerNorm). The patches shrink as the channels grow: P_l = floor(alpha C_L /
C_l), C_L the last learner's channels, at least 1 and at most the side of the learner's output map.

The wiring is feed-forward FF's (FFNetwork with competitive learners: no label in the input, no negatives, the
class scores of `model.predict_layers` summed to predict), so the family only builds the learners; its settings are
the [spatial_goodness] table. `configs/cifar10-spatial-goodness.toml` is the paper's mechanism on CIFAR-10, with
fflab's guesses where the text is silent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fflab.errors import ConfigError
from fflab.families import register_family
from fflab.families.base import IgnoredRule, require_settings
from fflab.families.feedforward import FFFamily, goodness_rules
from fflab.schema import bounded, described

if TYPE_CHECKING:
    from fflab.config import Config


@dataclass
class SpatialGoodnessSettings:
    """The [spatial_goodness] table."""

    patch_alpha: float = bounded(
        1.0,
        0.0,
        doc="the paper's alpha: learner l cuts each channel's map into P_l x P_l patches, P_l = floor(alpha * "
        "C_L / C_l) for C_l its channels and C_L the last learner's, at least 1 and at most its map's side",
    )
    patches: list[int] = described([], "P_l for each learner, instead of the alpha rule; empty: the rule")
    layer_norm: bool = described(
        True, "learners after the first take their input layer-normalised over channels at each position"
    )


def patch_counts(widths: list[int], sides: list[int], alpha: float, given: list[int] | None = None) -> list[int]:
    """Each learner's patches per side: `given`, or floor(alpha * C_L / C_l) clamped to 1..its output map's side."""
    if given:
        return list(given)
    last = widths[-1]
    return [
        max(1, min(side, math.floor(alpha * last / width + 1e-9))) for width, side in zip(widths, sides, strict=True)
    ]


@register_family
class SpatialGoodnessFamily(FFFamily):
    name = "spatial-goodness"
    summary = "conv learners scoring classes by spatial goodness patches and a fixed random map (after ASGE's paper)"
    settings = SpatialGoodnessSettings
    architectures = ("conv",)
    trains_in_parallel = False  # not checked with the layer-parallel trainers
    online_readout = False
    prediction_methods = ("goodness",)

    def validate(self, cfg: Config) -> None:
        super().validate(cfg)
        m, o = cfg.model, self.options(cfg)
        needs = {
            "model.architecture": (m.architecture, "conv"),
            "model.loss": (m.loss, "competitive"),
            "model.label": (m.label, "none"),
            "model.batch_norm": (m.batch_norm, False),
            "model.groups": (m.groups, []),
            "train.negatives": (cfg.train.negatives, "none"),
            "readout.enabled": (cfg.readout.enabled, False),
        }
        require_settings(
            needs,
            "spatial-goodness learners are convolutions that score classes from their own goodness patches, with no "
            "label input, no negatives and no readout",
        )
        if m.input_norm not in ("none", "channel", "rms", "length"):
            raise ConfigError(
                f"model.input_norm (the first learner's): expected 'none', 'channel', 'rms' or 'length', got "
                f"{m.input_norm!r} ('group' needs channels per class, which these learners have not)"
            )
        if o.patches and (len(o.patches) != len(m.hidden) or min(o.patches) < 1):
            raise ConfigError(
                f"spatial_goodness.patches: expected one positive count per learner ({len(m.hidden)}), got {o.patches}"
            )

    def ignored_settings(self, cfg: Config) -> list[IgnoredRule]:
        return [
            *goodness_rules(cfg),
            (
                ["model.goodness", "model.goodness_scope"],
                "a spatial-goodness learner's goodness is the mean square of each patch "
                "([spatial_goodness] patch_alpha, patches)",
            ),
        ]

    def build(self, cfg: Config, input_dim: int, num_classes: int, input_shape: tuple[int, ...] | None):
        model = super().build(cfg, input_dim, num_classes, input_shape)
        model.kind = self.name
        return model

    def layers(self, cfg: Config, embedding, input_shape, num_classes: int) -> list:
        from fflab.layers.conv import field_geometry
        from fflab.layers.spatial_goodness import SpatialGoodnessConv2d
        from fflab.models.stacks import learner_options, per_layer

        m, o = cfg.model, self.options(cfg)
        if input_shape is None or len(input_shape) != 3:
            raise ConfigError(f"model.kind = 'spatial-goodness' needs images (C, H, W), got {input_shape}")
        n = len(m.hidden)
        kernels, strides, pools = per_layer(m.kernel, n), per_layer(m.stride, n), m.pool or [1] * n
        sides, shape = [], tuple(input_shape)
        for i in range(n):  # each output map's shorter side, for the patch rule
            side = min(field_geometry(s, kernels[i], strides[i], m.padding)[0] for s in shape[1:])
            sides.append(side // pools[i])
            shape = (m.hidden[i], side // pools[i], side // pools[i])
        patches = patch_counts(m.hidden, sides, o.patch_alpha, o.patches)
        layers, shape = [], tuple(input_shape)
        for i, options in enumerate(learner_options(m, num_classes, channel_groups=False)):
            try:
                layer = SpatialGoodnessConv2d(
                    shape,
                    m.hidden[i],
                    patches=patches[i],
                    kernel=kernels[i],
                    stride=strides[i],
                    padding=m.padding,
                    pool=pools[i],
                    pool_mode=m.pool_mode,
                    dropout=m.dropout,
                    activation=m.activation,
                    input_norm=m.input_norm if i == 0 or not o.layer_norm else "channel",
                    init=m.init,
                    **options,
                )
            except ValueError as err:
                raise ConfigError(f"model layer {i} (input {'x'.join(map(str, shape))}): {err}") from None
            layers.append(layer)
            shape = layer.out_shape
        return layers
