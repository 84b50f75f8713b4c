"""Recurrent FF (Hinton 2022, Fig. 3): layers fed from below, above and themselves over synchronous time steps,
the label clamped at the top (kind "recurrent"); with LIF populations whose membrane leak is the damping
(kind "spiking-recurrent")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fflab.errors import ConfigError, FFLabError
from fflab.families import get_family, register_family
from fflab.families.base import Family, IgnoredRule
from fflab.families.feedforward import goodness_rules, spiking_cost
from fflab.schema import bounded, choice, described
from fflab.vocab import (
    BIAS_INITS,
    LABEL_PLACES,
    PREDICT_ORDERS,
    SCORES,
    SOURCE_INITS,
    SOURCE_NORMS,
    UPDATES,
    WIRINGS,
)

if TYPE_CHECKING:
    from fflab.config import Config


@dataclass
class RecurrentSettings:
    """The [recurrent] table: the dynamics of a recurrent network (Hinton 2022, Fig. 3) and how it learns over time."""

    steps: int = bounded(8, 1, doc="synchronous update steps")
    damping: float = bounded(0.3, 0.0, 1.0, doc="new = damping * old + (1 - damping) * computed")
    window: list[int] = described([3, 5], "first and last counted step, 1-based")
    hidden_steps: int = bounded(0, 0, doc="steps run with a neutral label and no damping")
    clock: bool = described(False, "append a one-hot code of the time step to each input frame")
    wiring: str = choice(
        "sum",
        WIRINGS,
        doc="sum: one matrix per source, summed; metalayer: mixed units; populations (spiking-recurrent): one LIF "
        "population per source, their spikes mixed (Nicola97's spiking metalayer)",
    )
    mix: list[float] = described([0.7, 0.3], "metalayer, populations: (up + down) and self weights")
    top_down_sign: float = described(1.0, "sign of the top-down input (negative in the inverted variant)")
    lateral: bool = described(
        True, "each layer also sees its own previous activity (false: only the layers below and above)"
    )
    score: str = choice(
        "steps",
        SCORES,
        doc="goodness of each counted step's activity, averaged (Hinton); or of the activity averaged over the "
        "window (a firing rate, for spiking layers whose single steps are binary)",
    )
    source_init: list[str] = described(
        ["kaiming", "kaiming", "orthogonal"],
        "up, down, lateral, and optionally the top layer's weights from the label (default: as down)",
    )
    bias_init: str = choice(
        "zeros",
        BIAS_INITS,
        doc="torch: a bias per source, U(+-1/sqrt(source width)) as nn.Linear makes it (the sum wiring then keeps "
        "three, the top-down one signed by top_down_sign: and-rewsmith's three nn.Linear); none: no bias",
    )
    update: str = choice(
        "window", UPDATES, doc="one update per sample (from the window), or one per step of the learning window"
    )
    learn_window: list[int] = described(
        [], "first and last step whose losses train the layers, 1-based (empty: the counted window)"
    )
    updates_per_step: int = bounded(
        1,
        1,
        doc="update = 'step': optimiser steps at each learning step on its inputs, held fixed; populations "
        "integrate their membranes from rest over them (Nicola97's spiking MetaLayer.train runs 100)",
    )
    recompute_after_update: bool = described(
        False,
        "update = 'step': pass on the activity recomputed from the same inputs with the weights the step just "
        "changed (Nicola97's MetaLayer.train returns self.forward(x) after opt.step())",
    )
    label_at: str = choice(
        "top",
        LABEL_PLACES,
        doc="top: clamped as the top layer's top-down input (Hinton's Fig. 3); input: written into the input by "
        "model.label (overlay or concat), the top layer having no top-down source (Nicola97's)",
    )
    source_norm: str = choice(
        "rms", SOURCE_NORMS, doc="scaling of every source: unit RMS, unit length x / (|x| + 1e-4) (Nicola97), none"
    )
    raw_input: bool = described(
        False, "feed the input frame and the label (1/C while hidden) unscaled, whatever source_norm (and-rewsmith)"
    )
    predict_order: str = choice(
        "synchronous",
        PREDICT_ORDERS,
        doc="in_turn: prediction updates each layer from the new activity of the one below, while training updates "
        "all from the previous step (Nicola97's predict: a mismatch kept only to reproduce it)",
    )
    window_weights: list[float] = described(
        [], "prediction: each counted step's weight in a label's score (empty: equal, the window's mean)"
    )


# The keys the [model] table held before the [recurrent] table existed.
_OLD_MODEL_KEYS = ("steps", "damping", "window", "hidden_steps", "clock", "wiring", "mix", "top_down_sign", "lateral")
MOVED_KEYS = {f"model.{name}": f"recurrent.{name}" for name in (*_OLD_MODEL_KEYS, "score", "source_init")}
MOVED_KEYS["train.update"] = "recurrent.update"


class RecurrentFamily(Family):
    name = "recurrent"
    summary = "Fig. 3"
    settings = RecurrentSettings
    moved_keys = MOVED_KEYS
    architectures = ("dense", "local")
    prediction_methods = ("goodness", "readout", "goodness+readout")
    readout_always_online = True

    def export_refusal(self, network, fmt: str) -> str | None:
        return (
            f"a {self.name!r} network's layers feed each other both ways over time steps, with the label entering "
            f"at the top, which fflab does not write as {fmt.upper()} yet"
        )

    def validate(self, cfg: Config) -> None:
        m, t, r = cfg.model, cfg.train, self.options(cfg)
        if len(r.window) != 2 or not 1 <= r.window[0] <= r.window[1] <= r.steps:
            raise ConfigError(
                f"recurrent.window: expected [first, last] with 1 <= first <= last <= steps ({r.steps}), got {r.window}"
            )
        if r.hidden_steps >= r.window[0]:
            raise ConfigError(
                f"recurrent.hidden_steps: the label must be visible in the counted window, so it must be "
                f"below window[0] = {r.window[0]}; got {r.hidden_steps}"
            )
        if len(r.mix) != 2:
            raise ConfigError(f"recurrent.mix: expected two weights [up_and_down, self], got {r.mix}")
        if not r.lateral and r.wiring == "metalayer":
            raise ConfigError(
                "recurrent.lateral = false: the metalayer wiring mixes in a lateral unit by design; use "
                "recurrent.wiring 'sum'"
            )
        if r.score == "window_mean" and r.update == "step":
            raise ConfigError(
                "recurrent.score = 'window_mean' scores the whole window at once, so it needs recurrent.update = "
                "'window' (one update per sample), not 'step'"
            )
        bad = [s for s in r.source_init if s not in SOURCE_INITS]
        if len(r.source_init) not in (3, 4) or bad:
            raise ConfigError(
                f"recurrent.source_init: expected three (or four) of {list(SOURCE_INITS)} (bottom-up, top-down, "
                f"lateral and, optionally, the top layer's from the label), got {r.source_init}"
            )
        if len(r.source_init) == 4 and r.label_at != "top":
            raise ConfigError("recurrent.source_init: a fourth entry initialises weights from a label at the top")
        negatives = ("random", "permuted_with_repeats", "hard", "hardest")
        if t.negatives not in negatives or (t.negatives in ("hard", "hardest") and t.hard_scores != "readout"):
            raise ConfigError(
                "train.negatives: recurrent networks take 'random' wrong labels (or 'permuted_with_repeats'), or "
                "'hard'/'hardest' ones with train.hard_scores = 'readout' (the online linear classifier)"
            )
        validate_learning_options(cfg, r)
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
                "a recurrent network scales every source to unit RMS and initialises each by recurrent.source_init",
            ),
        ]

    def check_data(self, cfg: Config, ds) -> None:
        """A recurrent network reads frame t at step t, and trains and predicts up to the counted window's end,
        so a longer sequence would lose its last frames without a word."""
        frames = getattr(ds.train_x, "num_steps", None)  # sequence data sets only
        window = self.options(cfg).window
        last = window[1]
        if frames is not None and frames > last:
            raise FFLabError(
                f"recurrent.window = {window}: {ds.name} sequences here have {frames} frames, but training "
                f"and prediction stop at step {last}, so frames {last + 1}-{frames} would never count; end "
                f"recurrent.window (and recurrent.steps) at step {frames} or later"
            )

    def spiking_neurons(self, cfg: Config) -> tuple | None:
        """(threshold, surrogate, slope) of LIF layers; None for analog ones."""
        return None

    def build(self, cfg: Config, input_dim: int, num_classes: int, input_shape: tuple[int, ...] | None):
        from fflab.layers.recurrent import RecurrentLayer
        from fflab.models.recurrent import RecurrentFFNetwork
        from fflab.models.stacks import learner_options, local_source_masks, readout_head
        from fflab.supervision import LabelEmbedding

        m, r = cfg.model, self.options(cfg)
        widths, maps, masks = m.hidden, [None] * len(m.hidden), [None] * len(m.hidden)
        if m.architecture == "local":
            maps, masks = local_source_masks(m.hidden, input_shape, m.kernel, r.lateral)
            widths = [math.prod(shape) for shape in maps]
        embedding = None
        if r.label_at == "input":
            embedding = LabelEmbedding(m.label, num_classes, input_dim, m.label_value, None, m.label_at_input_max)
        top_width = 0 if embedding is not None else num_classes
        first_width = embedding.input_dim if embedding is not None else input_dim + (r.steps if r.clock else 0)
        last = len(widths) - 1
        inits = tuple(r.source_init[:3])
        top_inits = (inits[0], r.source_init[3], inits[2]) if len(r.source_init) == 4 else inits
        layers = [
            RecurrentLayer(
                first_width if i == 0 else widths[i - 1],
                widths[i + 1] if i < last else top_width,
                width,
                masks=masks[i],
                map_shape=maps[i],
                wiring=r.wiring,
                activation=m.activation,
                inits=top_inits if i == last else inits,
                top_down_sign=r.top_down_sign,
                lateral=r.lateral,
                mix=tuple(r.mix),
                spiking=self.spiking_neurons(cfg),
                bias_init=r.bias_init,
                beta=cfg.spiking.beta,
                **options,
            )
            for i, (width, options) in enumerate(zip(widths, learner_options(m), strict=True))
        ]
        head = None
        if cfg.readout.enabled:
            chosen = cfg.readout.layers or list(range(len(layers)))
            head = readout_head(layers, chosen, num_classes, cfg.readout.standardize, cfg.readout.bias)
        return RecurrentFFNetwork(
            layers,
            input_dim,
            num_classes,
            steps=r.steps,
            damping=r.damping,
            window=tuple(r.window),
            hidden_steps=r.hidden_steps,
            clock=r.clock,
            score=r.score,
            readout=head,
            embedding=embedding,
            source_norm=r.source_norm,
            raw_input=r.raw_input,
            learn_window=tuple(r.learn_window) if r.learn_window else None,
            updates_per_step=r.updates_per_step,
            recompute_after_update=r.recompute_after_update,
            predict_order=r.predict_order,
            window_weights=r.window_weights,
        )

    def make_trainer(self, model, cfg: Config, *, progress: bool = True, image_shape=None):
        from fflab.training.trainer import RecurrentTrainer

        return RecurrentTrainer(model, cfg.train, self.options(cfg).update, progress=progress, readout=cfg.readout)

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

    @classmethod
    def table(cls) -> str:
        return "recurrent"  # the same dynamics as the analog kind

    def spiking_neurons(self, cfg: Config) -> tuple | None:
        s = cfg.spiking
        return (s.threshold, s.surrogate, s.slope)

    def ignored_settings(self, cfg: Config) -> list[IgnoredRule]:
        from fflab.config import SpikingSettings, setting_keys

        kept = ("spiking.threshold", "spiking.surrogate", "spiking.slope")
        if self.options(cfg).wiring == "populations":
            kept = (*kept, "spiking.beta")
        return [
            *super().ignored_settings(cfg),
            (
                [k for k in setting_keys(SpikingSettings, "spiking") if k not in kept],
                "spiking recurrent layers take only spiking.threshold, surrogate and slope (and beta, the membrane "
                "decay of the 'populations' wiring): their membrane leak is recurrent.damping, they reset by "
                "subtraction and run recurrent.steps on the analog input",
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


def validate_learning_options(cfg: Config, r: RecurrentSettings) -> None:
    """Checks of the options the public recurrent FF codes need (configs/reference/)."""
    m = cfg.model
    if r.learn_window and (
        len(r.learn_window) != 2 or not r.hidden_steps < r.learn_window[0] <= r.learn_window[1] <= r.steps
    ):
        raise ConfigError(
            f"recurrent.learn_window: expected [first, last] with hidden_steps ({r.hidden_steps}) < first <= last "
            f"<= steps ({r.steps}), or empty; got {r.learn_window}"
        )
    if r.update != "step" and (r.updates_per_step != 1 or r.recompute_after_update):
        raise ConfigError(
            "recurrent.updates_per_step and recurrent.recompute_after_update shape per-step learning: they need "
            "recurrent.update = 'step'"
        )
    window = r.window[1] - r.window[0] + 1 if len(r.window) == 2 else 0
    if r.window_weights and (len(r.window_weights) != window or r.score != "steps"):
        raise ConfigError(
            f"recurrent.window_weights: one weight per counted step ({window}), with recurrent.score = 'steps'; "
            f"got {r.window_weights}"
        )
    spiking = get_family(m.kind).spiking_neurons(cfg) is not None
    if r.wiring == "populations" and (not spiking or r.damping != 0 or r.score != "steps"):
        raise ConfigError(
            "recurrent.wiring = 'populations' is made of LIF populations that rest at every step: it needs "
            "model.kind = 'spiking-recurrent', recurrent.damping = 0 and recurrent.score = 'steps'"
        )
    if r.label_at == "input" and (m.label not in ("overlay", "concat") or r.clock or m.architecture != "dense"):
        raise ConfigError(
            "recurrent.label_at = 'input' writes the label into a dense network's input: it needs model.label = "
            "'overlay' or 'concat', no recurrent.clock and model.architecture = 'dense'"
        )
    if m.architecture == "local" and (r.source_norm != "rms" or r.raw_input or r.bias_init != "zeros"):
        raise ConfigError(
            "recurrent.source_norm, raw_input and bias_init are for dense recurrent networks; leave them at their "
            "defaults with model.architecture = 'local'"
        )


def validate_local_maps(cfg: Config) -> None:
    """A recurrent net of locally connected maps keeps every map at the image's size (so top-down fields
    mirror bottom-up ones) and takes its label at the top, so the feed-forward map options do not apply."""
    from fflab.data.registry import get_spec

    m, r = cfg.model, get_family(cfg.model.kind).options(cfg)
    if get_spec(cfg.data.name).kind == "derived":
        raise ConfigError(f"model.architecture = 'local' needs images; {cfg.data.name!r} holds sequences")
    unused = {
        "model.stride": any(s != 1 for s in (m.stride if isinstance(m.stride, list) else [m.stride])),
        "model.padding": m.padding != "same",
        "model.pool": any(p != 1 for p in m.pool),
        "model.batch_norm": m.batch_norm,
        "model.dropout": m.dropout > 0,
        "recurrent.clock": r.clock,
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
    if any(scheme in ("orthogonal", "identity") for scheme in r.source_init):
        raise ConfigError(
            f"recurrent.source_init = {r.source_init}: 'orthogonal' and 'identity' do not survive the receptive-field "
            "masks of a locally connected source (masking would shrink them to a fraction of their scale); use "
            "'kaiming', 'xavier' or 'zeros'"
        )


register_family(RecurrentFamily)
register_family(SpikingRecurrentFamily)
