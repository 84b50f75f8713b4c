"""Residual FF (kind "residual-ff"): DeeperForward's deep FF network (Sun et al., ICLR 2025), channel-wise competitive
conv learners with mean goodness, each passing on its activity group-normalised per class, in residual blocks.

The learners are fflab's own (FFConv2d with the competitive loss, `model.goodness = "mean_activity"`): `model.hidden`
gives each learner's conv channels and `model.stride` its stride, as for any conv net. This family adds the wiring
(fflab.models.residual) and, in its [residual_ff] table, the blocks, the input pipeline, DeeperForward's bias-free
fan-out initialisation and its learning-rate floor. `configs/reference/deeperforward-resnet17.toml` is the paper's
ResNet-17 and recipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fflab.errors import ConfigError
from fflab.families import register_family
from fflab.families.base import IgnoredRule, require_settings
from fflab.families.feedforward import FFFamily, goodness_rules
from fflab.schema import bounded, choice, described

if TYPE_CHECKING:
    from fflab.config import Config


@dataclass
class ResidualFFSettings:
    """The [residual_ff] table."""

    block_layers: int = bounded(
        2, 0, doc="learners per residual block after the first (stem) learner; 0: a plain chain, no shortcuts"
    )
    joins: list[str] = described(
        [],
        'per block, how its input (the shortcut) meets its last learner\'s output: "add" (equal channels) or '
        '"concat" (side by side); empty: "add" where the channels match, else "concat"',
    )
    bias: bool = described(True, "learners' convolutions have a bias (DeeperForward's have none)")
    init_fan: str = choice(
        "in",
        ("in", "out"),
        doc="He-normal weights scaled by each unit's inputs (model.init) or, 'out', by each input's outputs "
        "(torch's kaiming_normal_(mode='fan_out'), as DeeperForward initialises)",
    )
    channel_mean: list[float] = described([], "subtracted from each input channel first; empty: 0")
    channel_std: list[float] = described([], "then each input channel divided by this; empty: 1")
    image_norm: bool = described(True, "then each image standardised as a whole (layer norm, no learned scale)")
    lr_min: float = bounded(0.0, 0.0, doc="the floor train.lr_decay decays the learning rate to (not 0)")
    lr_every: str = choice(
        "batch", ("batch", "epoch"), doc="the schedule moves every batch, or once per epoch (torch schedulers)"
    )


@register_family
class ResidualFFFamily(FFFamily):
    name = "residual-ff"
    summary = "channel-wise competitive conv learners in residual blocks (DeeperForward)"
    settings = ResidualFFSettings
    architectures = ("conv",)
    online_readout = False
    prediction_methods = ("goodness",)

    def validate(self, cfg: Config) -> None:
        super().validate(cfg)
        m, o = cfg.model, self.options(cfg)
        needs = {
            "model.loss": (m.loss, "competitive"),
            "model.input_norm": (m.input_norm, "none"),
            "model.padding": (m.padding, "same"),
            "model.batch_norm": (m.batch_norm, False),
            "model.pool": (m.pool, []),
            "model.groups": (m.groups, []),
            "readout.enabled": (cfg.readout.enabled, False),
        }
        require_settings(
            needs,
            "a residual FF network's learners are competitive convolutions that keep their map size unless strided, "
            "normalise what they pass on per class group themselves (the input: [residual_ff] image_norm) and "
            "predict by goodness",
        )
        if o.lr_min > cfg.train.lr:
            raise ConfigError(f"residual_ff.lr_min = {o.lr_min} is above train.lr = {cfg.train.lr}")
        if len(o.channel_mean) != len(o.channel_std) and o.channel_mean and o.channel_std:
            raise ConfigError("residual_ff.channel_mean and channel_std: expected one value per input channel in each")
        if any(s <= 0 for s in o.channel_std):
            raise ConfigError(f"residual_ff.channel_std: expected positive values, got {o.channel_std}")
        try:
            self.wiring(cfg)
        except ValueError as err:
            raise ConfigError(f"residual_ff: {err} (model.hidden = {m.hidden})") from None

    def wiring(self, cfg: Config) -> tuple[list[str | None], list[bool]]:
        """Per learner: its join and whether it taps the shortcut (ValueError where the blocks do not fit)."""
        from fflab.models.residual import block_plan, output_channels, resolve_joins

        o, widths = self.options(cfg), cfg.model.hidden
        joins, taps = block_plan(len(widths), o.block_layers, resolve_joins(widths, o.block_layers, o.joins))
        output_channels(widths, joins, taps)
        return joins, taps

    def ignored_settings(self, cfg: Config) -> list[IgnoredRule]:
        return [
            *goodness_rules(cfg),
            (["model.pool_mode"], "residual FF learners shrink their maps by their stride, never by pooling"),
        ]

    def build(self, cfg: Config, input_dim: int, num_classes: int, input_shape: tuple[int, ...] | None):
        import torch
        from torch import nn

        from fflab.layers.conv import FFConv2d
        from fflab.layers.dense import INIT_GAIN
        from fflab.models.residual import ResidualFFNetwork, output_channels
        from fflab.models.stacks import learner_options, per_layer
        from fflab.supervision import LabelEmbedding

        m, o = cfg.model, self.options(cfg)
        if input_shape is None or len(input_shape) != 3:
            raise ConfigError(f"model.kind = 'residual-ff' needs images (C, H, W), got {input_shape}")
        joins, taps = self.wiring(cfg)
        widths, n = m.hidden, len(m.hidden)
        passed = output_channels(widths, joins, taps)
        kernels, strides = per_layer(m.kernel, n), per_layer(m.stride, n)
        layers, shape = [], tuple(input_shape)
        for i, options in enumerate(learner_options(m, num_classes)):
            try:
                layer = FFConv2d(
                    shape,
                    widths[i],
                    kernel=kernels[i],
                    stride=strides[i],
                    dropout=m.dropout,
                    scope=m.goodness_scope,
                    activation=m.activation,
                    input_norm="none",
                    init=m.init,
                    bias=o.bias,
                    **options,
                )
            except ValueError as err:
                raise ConfigError(f"model layer {i} (input {'x'.join(map(str, shape))}): {err}") from None
            if o.init_fan == "out":
                gain = nn.init.calculate_gain(INIT_GAIN.get(m.activation, "linear"))
                with torch.no_grad():
                    layer.conv.weight.normal_(0.0, gain / math.sqrt(widths[i] * kernels[i] ** 2))
            layers.append(layer)
            shape = (passed[i], *layer.out_shape[1:])
        embedding = LabelEmbedding("none", num_classes, input_dim, m.label_value, input_shape)
        return ResidualFFNetwork(
            layers,
            embedding,
            joins,
            taps,
            m.predict_layers,
            channel_mean=o.channel_mean,
            channel_std=o.channel_std,
            image_norm=o.image_norm,
        )

    def make_trainer(self, model, cfg: Config, *, progress: bool = True, image_shape=None):
        from fflab.training.residual import ResidualFFTrainer

        o = self.options(cfg)
        return ResidualFFTrainer(
            model, cfg.train, lr_min=o.lr_min, lr_every=o.lr_every, progress=progress, image_shape=image_shape
        )

    def make_parallel_trainer(self, model, cfg: Config, plan, *, progress: bool = True, image_shape=None):
        from fflab.training.residual import DistributedResidualTrainer

        o = self.options(cfg)
        return DistributedResidualTrainer(
            model, cfg.train, plan, lr_min=o.lr_min, lr_every=o.lr_every, progress=progress, image_shape=image_shape
        )
