"""An FF variant in one module: feed-forward FF whose layers learn at their own rates.

Each layer's learning rate is train.lr (as its schedule has it) times its entry in `lr_scale`, a setting of the
config table this family owns, [ff_layer_lr]. Importing this module registers the family (a package can instead
name it in the `fflab.families` entry point group); a config then selects it with model.kind = "ff-layer-lr".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fflab.errors import ConfigError
from fflab.families import register_family
from fflab.families.feedforward import FFFamily
from fflab.training.trainer import FFTrainer


@dataclass
class LayerLRSettings:
    lr_scale: list[float] = field(default_factory=list, metadata={"doc": "one factor per layer; empty: all 1"})


class LayerLRTrainer(FFTrainer):
    """FFTrainer with each layer's optimiser at its own share of the scheduled learning rate."""

    def __init__(self, model, settings, scales: list[float], **options) -> None:
        self.scales = scales or [1.0] * len(model.layers)
        super().__init__(model, settings, **options)

    def _set_lr(self, progress: float) -> float:
        lr = super()._set_lr(progress)
        for opt, scale in zip(self.optimizers, self.scales, strict=True):
            for group in opt.param_groups:
                group["lr"] = lr * scale
        return lr


@register_family
class LayerLRFamily(FFFamily):
    name = "ff-layer-lr"
    summary = "feed-forward FF, one learning rate per layer"
    settings = LayerLRSettings
    trains_in_parallel = False  # the parallel trainer would not scale the rates

    def validate(self, cfg) -> None:
        super().validate(cfg)
        scales, layers = cfg.family_settings.lr_scale, len(cfg.model.hidden)
        if scales and len(scales) != layers:
            raise ConfigError(f"ff_layer_lr.lr_scale: expected one factor per layer ({layers}), got {scales}")

    def make_trainer(self, model, cfg, *, progress=True, image_shape=None):
        scales = cfg.family_settings.lr_scale
        return LayerLRTrainer(model, cfg.train, scales, progress=progress, image_shape=image_shape, readout=cfg.readout)
