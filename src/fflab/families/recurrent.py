"""Recurrent FF (Hinton 2022, Fig. 3): layers fed from below, above and themselves over synchronous time steps,
the label clamped at the top (kind "recurrent"); with LIF populations whose membrane leak is the damping
(kind "spiking-recurrent")."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fflab.errors import ConfigError, FFLabError
from fflab.families import register_family
from fflab.families.base import Family, IgnoredRule
from fflab.families.feedforward import goodness_rules, spiking_cost
from fflab.vocab import SOURCE_INITS

if TYPE_CHECKING:
    from fflab.config import Config


class RecurrentFamily(Family):
    name = "recurrent"
    summary = "Fig. 3"
    architectures = ("dense", "local")
    prediction_methods = ("goodness", "readout", "goodness+readout")

    def validate(self, cfg: Config) -> None:
        m, t = cfg.model, cfg.train
        if len(m.window) != 2 or not 1 <= m.window[0] <= m.window[1] <= m.steps:
            raise ConfigError(
                f"model.window: expected [first, last] with 1 <= first <= last <= steps ({m.steps}), got {m.window}"
            )
        if m.hidden_steps >= m.window[0]:
            raise ConfigError(
                f"model.hidden_steps: the label must be visible in the counted window, so it must be "
                f"below window[0] = {m.window[0]}; got {m.hidden_steps}"
            )
        if len(m.mix) != 2:
            raise ConfigError(f"model.mix: expected two weights [up_and_down, self], got {m.mix}")
        if not m.lateral and m.wiring == "metalayer":
            raise ConfigError(
                "model.lateral = false: the metalayer wiring mixes in a lateral unit by design; use wiring 'sum'"
            )
        if m.score == "window_mean" and t.update == "step":
            raise ConfigError(
                "model.score = 'window_mean' scores the whole window at once, so it needs train.update = 'window' "
                "(one update per sample), not 'step'"
            )
        bad = [s for s in m.source_init if s not in SOURCE_INITS]
        if len(m.source_init) != 3 or bad:
            raise ConfigError(
                f"model.source_init: expected three of {list(SOURCE_INITS)} (bottom-up, top-down, "
                f"lateral), got {m.source_init}"
            )
        if t.negatives not in ("random", "hard", "hardest") or (t.negatives != "random" and t.hard_scores != "readout"):
            raise ConfigError(
                "train.negatives: recurrent networks take 'random' wrong labels, or 'hard'/'hardest' "
                "ones with train.hard_scores = 'readout' (the online linear classifier)"
            )
        if m.architecture == "local":
            validate_local_maps(cfg)

    def ignored_settings(self, cfg: Config) -> list[IgnoredRule]:
        return [
            *goodness_rules(cfg),
            (
                ["model.predict_layers"],
                f"{self.name} networks predict from every layer's goodness (each layer's own accuracy is in "
                "summary.json); only ff and spiking networks sum a chosen set",
            ),
            (
                ["train.schedule"],
                f"{self.name} networks train every layer on every batch; the greedy schedule is for ff and spiking "
                "ones",
            ),
            (
                ["model.input_norm", "model.init"],
                "a recurrent network scales every source to unit RMS and initialises each by model.source_init",
            ),
        ]

    def check_data(self, cfg: Config, ds) -> None:
        """A recurrent network reads frame t at step t, and trains and predicts up to the counted window's end,
        so a longer sequence would lose its last frames without a word."""
        frames = getattr(ds.train_x, "num_steps", None)  # sequence data sets only
        last = cfg.model.window[1]
        if frames is not None and frames > last:
            raise FFLabError(
                f"model.window = {cfg.model.window}: {ds.name} sequences here have {frames} frames, but training "
                f"and prediction stop at step {last}, so frames {last + 1}-{frames} would never count; end "
                f"model.window (and model.steps) at step {frames} or later"
            )

    def spiking_neurons(self, cfg: Config) -> tuple | None:
        """(threshold, surrogate, slope) of LIF layers; None for analog ones."""
        return None

    def build(self, cfg: Config, input_dim: int, num_classes: int, input_shape: tuple[int, ...] | None):
        from fflab.layers.recurrent import RecurrentLayer
        from fflab.models.recurrent import RecurrentFFNetwork
        from fflab.models.stacks import learner_options, local_source_masks, readout_head

        m = cfg.model
        widths, maps, masks = m.hidden, [None] * len(m.hidden), [None] * len(m.hidden)
        if m.architecture == "local":
            maps, masks = local_source_masks(m.hidden, input_shape, m.kernel, m.lateral)
            widths = [math.prod(shape) for shape in maps]
        layers = [
            RecurrentLayer(
                input_dim + (m.steps if m.clock else 0) if i == 0 else widths[i - 1],
                widths[i + 1] if i + 1 < len(widths) else num_classes,
                width,
                masks=masks[i],
                map_shape=maps[i],
                wiring=m.wiring,
                activation=m.activation,
                inits=tuple(m.source_init),
                top_down_sign=m.top_down_sign,
                lateral=m.lateral,
                mix=tuple(m.mix),
                spiking=self.spiking_neurons(cfg),
                **options,
            )
            for i, (width, options) in enumerate(zip(widths, learner_options(m), strict=True))
        ]
        head = None
        if cfg.readout.enabled:
            chosen = cfg.readout.layers or list(range(len(layers)))
            head = readout_head(layers, chosen, num_classes, cfg.readout.standardize)
        return RecurrentFFNetwork(
            layers,
            input_dim,
            num_classes,
            steps=m.steps,
            damping=m.damping,
            window=tuple(m.window),
            hidden_steps=m.hidden_steps,
            clock=m.clock,
            score=m.score,
            readout=head,
        )

    def make_trainer(self, model, cfg: Config, *, progress: bool = True, image_shape=None):
        from fflab.training.trainer import RecurrentTrainer

        return RecurrentTrainer(model, cfg.train, progress=progress, readout=cfg.readout)

    def write_plots(self, cfg: Config, model, trainer, ds, plots) -> None:
        """Goodness per time step of positive and negative data, and a few samples' activity over time."""
        import torch

        from fflab.analysis.plots import plot_activity_over_time, plot_goodness_over_time
        from fflab.supervision import random_wrong_labels

        gen = torch.Generator().manual_seed(cfg.train.seed + 1)
        n = min(500, len(ds.test_x))
        x, y = ds.test_x[:n], ds.test_y[:n]  # a slice of a sequence source renders just these rows
        wrong = random_wrong_labels(y, model.num_classes, gen)
        pos, neg = model.trace(x, y).goodness.mean(2), model.trace(x, wrong).goodness.mean(2)
        plot_goodness_over_time(pos, neg, plots / "goodness_over_time.png", model.window, model.hidden_steps)
        plot_activity_over_time(
            model.trace(x[:4], y[:4], keep_activities=True).activities, plots / "activity_over_time.png"
        )


class SpikingRecurrentFamily(RecurrentFamily):
    name = "spiking-recurrent"
    summary = "Fig. 3 with LIF layers"

    def spiking_neurons(self, cfg: Config) -> tuple | None:
        s = cfg.spiking
        return (s.threshold, s.surrogate, s.slope)

    def ignored_settings(self, cfg: Config) -> list[IgnoredRule]:
        from fflab.config import SpikingSettings, setting_keys

        kept = ("spiking.threshold", "spiking.surrogate", "spiking.slope")
        return [
            *super().ignored_settings(cfg),
            (
                [k for k in setting_keys(SpikingSettings, "spiking") if k not in kept],
                "spiking recurrent layers take only spiking.threshold, surrogate and slope: their membrane leak is "
                "model.damping, they reset by subtraction and run model.steps on the analog input",
            ),
        ]

    def spike_trains(self, model, x):
        """Every layer's spikes at steps 1..window end; the inputs are analog (see `inference_cost`)."""
        import torch

        steps = []
        model.run(x, None, on_step=lambda t, s: steps.append(s), static_up=model.static_up(x))
        return None, [torch.stack([s[i] for s in steps]) for i in range(len(model.layers))]

    def inference_cost(self, model, trains, static_input: bool = True) -> dict:
        """A unit's spike at step t reaches, at step t + 1, the units of the layers above and below (and of its
        own, with a lateral source) whose fields hold it (`RecurrentLayer.fan_out`); the input (once for a
        static image, else every step) and the neutral label (every step) are analog, costing MACs."""
        _, outputs = trains
        steps, n = outputs[0].shape[:2]
        last = len(model.layers) - 1
        frames = 1 if static_input and not model.clock else steps
        synops, macs = 0.0, frames * model.layers[0].up_flops() / 2  # as executed, like the dense pass beside it
        for i, layer in enumerate(model.layers):
            for j, fan_out in zip((i - 1, i + 1, i), layer.fan_out(), strict=True):  # below, above, itself
                if 0 <= j <= last and fan_out.numel():
                    synops += (outputs[j][:-1].sum((0, 1)).cpu() * fan_out).sum().item() / n
            if i == last:
                macs += steps * model.num_classes * layer.width
        return spiking_cost(model, outputs, synops, macs)


def validate_local_maps(cfg: Config) -> None:
    """A recurrent net of locally connected maps keeps every map at the image's size (so top-down fields
    mirror bottom-up ones) and takes its label at the top, so the feed-forward map options do not apply."""
    from fflab.data.registry import get_spec

    m = cfg.model
    if get_spec(cfg.data.name).kind == "derived":
        raise ConfigError(f"model.architecture = 'local' needs images; {cfg.data.name!r} holds sequences")
    unused = {
        "model.stride": any(s != 1 for s in (m.stride if isinstance(m.stride, list) else [m.stride])),
        "model.padding": m.padding != "same",
        "model.pool": any(p != 1 for p in m.pool),
        "model.batch_norm": m.batch_norm,
        "model.dropout": m.dropout > 0,
        "model.clock": m.clock,
        "model.label": m.label in ("channels", "pattern"),
        "model.goodness_scope": m.goodness_scope != "sample",
        "model.input_norm": m.input_norm not in ("rms", "length"),
    }
    bad = [key for key, is_set in unused.items() if is_set]
    if bad:
        raise ConfigError(
            f"{', '.join(bad)}: a recurrent locally connected net keeps every map at the image's size (stride 1, "
            "padding 'same', no pooling, batch norm or dropout), has no clock, takes the label at its top layer "
            "and scores and normalises whole layers; leave these at their defaults"
        )
    if any(scheme in ("orthogonal", "identity") for scheme in m.source_init):
        raise ConfigError(
            f"model.source_init = {m.source_init}: 'orthogonal' and 'identity' do not survive the receptive-field "
            "masks of a locally connected source (masking would shrink them to a fraction of their scale); use "
            "'kaiming', 'xavier' or 'zeros'"
        )


register_family(RecurrentFamily)
register_family(SpikingRecurrentFamily)
