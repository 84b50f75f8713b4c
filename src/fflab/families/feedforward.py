"""Feed-forward FF (Hinton 2022): a chain of local learners on label-embedded inputs (kind "ff"), and its
spiking form, LIF learners trained on the FF loss through surrogate gradients (kind "spiking")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fflab.errors import ConfigError
from fflab.families import register_family
from fflab.families.base import Family, IgnoredRule, analog_export_refusal, spiking_export_refusal

if TYPE_CHECKING:
    from fflab.config import Config


class FFFamily(Family):
    name = "ff"
    summary = "local FF learners"
    architectures = ("dense", "conv", "local")
    runs_on_gpu = True
    trains_in_parallel = True
    competitive = True
    layer_schedules = True

    def validate(self, cfg: Config) -> None:
        m, t = cfg.model, cfg.train
        spatial = m.architecture != "dense"
        if spatial and m.label == "concat":
            raise ConfigError(
                "model.label = 'concat' appends label units to a flat input, which convolutional and locally "
                "connected layers cannot take as an image: use 'channels', 'pattern' or 'overlay'"
            )
        if t.layer_epochs:
            if t.schedule != "simultaneous":
                raise ConfigError(
                    "train.layer_epochs: per-layer training windows are for the simultaneous schedule; got "
                    f"schedule {t.schedule!r}"
                )
            if len(t.layer_epochs) != len(m.hidden) or not all(1 <= e <= t.epochs for e in t.layer_epochs):
                raise ConfigError(
                    f"train.layer_epochs: expected one epoch count per layer ({len(m.hidden)}), each in "
                    f"1..train.epochs ({t.epochs}); got {t.layer_epochs}"
                )
            if max(t.layer_epochs) != t.epochs:
                raise ConfigError(
                    f"train.layer_epochs: no layer learns after epoch {max(t.layer_epochs)}, so train.epochs = "
                    f"{t.epochs} would run epochs that train nothing; make the largest entry equal train.epochs"
                )
        competitive = m.loss == "competitive"
        if not competitive:
            unsupervised = m.label == "none"
            if unsupervised != (t.negatives == "hybrid"):
                raise ConfigError(
                    "model.label = 'none' (unsupervised FF) and train.negatives = 'hybrid' go together: "
                    f"got label = {m.label!r} with negatives = {t.negatives!r}"
                )
            if unsupervised and t.batch_size < 2:
                raise ConfigError(
                    "train.batch_size: hybrid negatives mix two images of a batch, so batches need 2 rows"
                )
            if unsupervised and cfg.eval.predict != "readout":
                raise ConfigError(
                    "eval.predict: unsupervised FF (model.label = 'none') can only predict with 'readout'"
                )

    def ignored_settings(self, cfg: Config) -> list[IgnoredRule]:
        return goodness_rules(cfg)

    def total_epochs(self, cfg: Config) -> int:
        greedy = cfg.train.schedule == "greedy"
        return cfg.train.epochs * (len(cfg.model.hidden) if greedy else 1)

    def describe_schedule(self, cfg: Config) -> str:
        return cfg.train.schedule

    def build(self, cfg: Config, input_dim: int, num_classes: int, input_shape: tuple[int, ...] | None):
        from fflab.models.feedforward import FFNetwork, all_but_first
        from fflab.models.stacks import readout_head
        from fflab.supervision import LabelEmbedding

        m = cfg.model
        embedding = LabelEmbedding(m.label, num_classes, input_dim, m.label_value, input_shape, m.label_at_input_max)
        layers = self.layers(cfg, embedding, input_shape, num_classes)
        head = None
        if cfg.readout.enabled:
            chosen = cfg.readout.layers or all_but_first(len(layers))
            head = readout_head(layers, chosen, num_classes, cfg.readout.standardize, cfg.readout.bias)
        return FFNetwork(layers, embedding, m.predict_layers, head)

    def layers(self, cfg: Config, embedding, input_shape, num_classes: int) -> list:
        """The hidden learners, on inputs with the label written in."""
        from fflab.models.stacks import hidden_stack

        return hidden_stack(cfg.model, embedding.input_dim, input_shape, num_classes, embedding.extra_channels)

    def make_trainer(self, model, cfg: Config, *, progress: bool = True, image_shape=None):
        from fflab.training.trainer import FFTrainer

        return FFTrainer(model, cfg.train, progress=progress, image_shape=image_shape, readout=cfg.readout)

    def monitor_method(self, model) -> str | None:
        return "goodness" if model.predicts_by_goodness else None

    def export_refusal(self, network, fmt: str) -> str | None:
        return analog_export_refusal(self.name, fmt)

    def write_plots(self, cfg: Config, model, trainer, ds, plots) -> None:
        """Per layer: goodness of positive vs negative data and the per-image margin."""
        import torch

        from fflab.analysis.plots import plot_goodness_histograms
        from fflab.training.evaluate import goodness_samples

        gen = torch.Generator().manual_seed(cfg.train.seed + 1)
        n = min(2000, len(ds.test_x))
        x, y = ds.test_x[:n], ds.test_y[:n]
        pos, neg = goodness_samples(model, trainer.make_pairs(x, y, gen), n, y)
        theta = cfg.model.theta if cfg.model.loss == "softplus" else None  # symba has no threshold
        plot_goodness_histograms(pos, neg, plots / "goodness_histograms.png", theta)

    def check_parallel(self, cfg: Config, plan) -> None:
        from fflab.errors import FFLabError

        m, t = cfg.model, cfg.train
        if t.schedule != "simultaneous":
            raise FFLabError("the greedy schedule trains one layer at a time, so there is nothing to run in parallel")
        if t.layer_epochs:
            raise FFLabError("train.layer_epochs (per-layer training windows) runs in one process only")
        if t.layer_order != "together" or t.fixed_negatives or cfg.readout.online:
            raise FFLabError(
                "train.layer_order = 'in_turn', train.fixed_negatives and readout.online run in one process only"
            )
        if plan.stages > len(m.hidden):
            raise FFLabError(
                f"{plan.stages} pipeline stages need at least as many layers; the model has {len(m.hidden)}"
            )
        if plan.stages > 1 and t.negatives in ("hard", "hardest") and t.hard_scores == "prediction":
            raise FFLabError(
                "hard negatives scored by the whole network need every layer on the first stage; use "
                "train.hard_scores = 'first_layer' or 'refreshed' with a pipeline"
            )
        if t.negatives in ("hard", "hardest") and t.hard_scores == "readout":
            raise FFLabError(
                "hard negatives from the online readout need every layer and one readout learning in step; "
                "use train.hard_scores = 'first_layer' or 'refreshed' in parallel training"
            )
        if plan.replicas > 1 and m.batch_norm:
            raise FFLabError("batch norm statistics differ between data-parallel replicas; use pipeline mode")


class SpikingFamily(FFFamily):
    name = "spiking"
    summary = "LIF learners (surrogate gradient)"
    architectures = ("dense",)
    runs_on_gpu = False
    competitive = False

    def ignored_settings(self, cfg: Config) -> list[IgnoredRule]:
        return [
            *goodness_rules(cfg),
            (
                ["model.activation", "model.init"],
                "multi-layer spiking FF runs LIF units with Kaiming weights; these are analog settings",
            ),
        ]

    def layers(self, cfg: Config, embedding, input_shape, num_classes: int) -> list:
        from fflab.models.stacks import spiking_stack

        return spiking_stack(cfg.model, embedding.input_dim, cfg.spiking)

    def export_refusal(self, network, fmt: str) -> str | None:
        return spiking_export_refusal(self.name, fmt)

    def spike_trains(self, model, x):
        outputs = [h.transpose(0, 1) for h in model.activities(model.embedding.neutral(x))]
        return [None, *outputs[:-1]], outputs

    def inference_cost(self, model, trains, static_input: bool = True) -> dict:
        """Spikes and synaptic operations (each input spike reaches every unit of the layer it feeds; a layer
        fed analog values costs its MACs), beside the MACs of a dense pass."""
        inputs, outputs = trains
        n = outputs[0].shape[1]
        synops = macs = 0.0
        for layer, train in zip(model.layers, inputs, strict=True):
            if train is None:
                macs += layer.forward_flops() / 2
            else:
                synops += (train != 0).sum().item() * layer.out_features / n
        return spiking_cost(model, outputs, synops, macs)


def spiking_cost(model, outputs, synops: float, macs: float) -> dict:
    """The cost record of a spiking pass whose output spikes per layer are `outputs` [T, N, H]."""
    n = outputs[0].shape[1]
    return {
        "spikes_per_sample": sum(o.sum().item() for o in outputs) / n,
        "synops_per_sample": synops,
        "analog_macs_per_sample": macs,
        "dense_macs_per_sample": model.forward_flops() // 2,
    }


def goodness_rules(cfg: Config) -> list[IgnoredRule]:
    """Settings the goodness losses do not read, for the families trained on them (ff, spiking, recurrent)."""
    loss = cfg.model.loss
    rules: list[IgnoredRule] = []
    if loss in ("softplus", "unbounded", "squared_distance"):
        rules.append(
            (["model.alpha"], f"alpha sharpens the symba loss and scales the competitive one; {loss!r} has none")
        )
    if loss not in ("softplus", "squared_distance"):
        rules.append(
            (
                ["model.theta"],
                f"the threshold belongs to the softplus loss (and the squared-distance one); {loss!r} compares "
                "goodness without one",
            )
        )
    return rules


register_family(FFFamily)
register_family(SpikingFamily)
