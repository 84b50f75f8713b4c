"""The backprop baseline (kind "backprop"): an FF config's layers with a classifier head, trained end to end with
cross-entropy. It keeps the FF config's settings, unread, so `--set model.kind=backprop` compares like with like."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fflab.families import register_family
from fflab.families.base import Family, analog_export_refusal

if TYPE_CHECKING:
    from fflab.config import Config


class BackpropFamily(Family):
    name = "backprop"
    summary = "baseline"
    architectures = ("dense", "conv", "local")
    runs_on_gpu = True
    online_readout = False
    prediction_methods = ("backprop",)
    learns_locally = False  # the FF loss, negatives and readout settings of the config it twins are not read

    def primary_method(self, cfg: Config) -> str:
        return "backprop"

    def monitor_method(self, model) -> str | None:
        return "backprop"

    def export_refusal(self, network, fmt: str) -> str | None:
        return analog_export_refusal(self.name, fmt)

    def has_readout(self, model) -> bool:
        return False

    def build(self, cfg: Config, input_dim: int, num_classes: int, input_shape: tuple[int, ...] | None):
        from fflab.models.backprop import BackpropNetwork
        from fflab.models.stacks import hidden_stack

        return BackpropNetwork(hidden_stack(cfg.model, input_dim, input_shape, num_classes), num_classes)

    def make_trainer(self, model, cfg: Config, *, progress: bool = True, image_shape=None):
        from fflab.training.trainer import BackpropTrainer

        return BackpropTrainer(model, cfg.train, progress=progress)


register_family(BackpropFamily)
