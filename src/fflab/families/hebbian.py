"""Neo-Hebbian FF (Terres-Escudero et al. 2024, arXiv 2406.16479; kind "hebbian"): LIF (or analog ReLU) layers
on the image and a label code, each learning by a gradient-free three-factor rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fflab.errors import ConfigError
from fflab.families import register_family
from fflab.families.base import Family, IgnoredRule, spiking_export_refusal
from fflab.families.feedforward import spiking_cost
from fflab.schema import bounded, choice, described
from fflab.vocab import (
    HEBBIAN_INITS,
    HEBBIAN_SCORES,
    HEBBIAN_UPDATES,
    LABEL_CODES,
    NEURONS,
    PLASTICITY,
    POST_GATES,
    PRESENTATIONS,
    SYMMETRIC_RULES,
    THIRD_FACTORS,
)

if TYPE_CHECKING:
    from fflab.config import Config


@dataclass
class HebbianSettings:
    """The [hebbian] table: the units, the label input and the three-factor rule ([spiking] sets the neurons'
    dynamics and the spike encoding)."""

    neuron: str = choice("lif", NEURONS, doc="lif: leaky integrate-and-fire; relu: the analog twin")
    rest_steps: int = bounded(0, 0, doc="silent steps appended to each sample")
    third_factor: str = choice("sigmoid", THIRD_FACTORS, doc="P = sigmoid(scale (G - theta)), or G+ / (G+ + G-)")
    scale: float = bounded(1.0, 0.0, doc="sigmoid third factor: slope s")
    eligibility_decay: float = bounded(1.0, 0.0, 1.0, doc="weight of step t: rate * decay^(T-1-t) / T")
    eligibility_rate: float = bounded(1.0, 0.0, doc="the rate in eligibility_decay's step weights")
    top_k: int = bounded(0, 0, doc="update only the k most active units per sample (0: all)")
    post_gate: str = choice(
        "none", POST_GATES, doc="weight the postsynaptic trace by the spike's surrogate derivative (spiking.slope)"
    )
    label_code: str = choice("onehot", LABEL_CODES, doc="label input: one-hot, or a random binary code per class")
    code_bits: int = bounded(100, 1, doc="bits of the binary label code")
    code_density: float = bounded(
        0.5,
        0.0,
        1.0,
        doc="binary label code: probability of a 1 bit (0.5: fair coin flips; Hebbian_FFA draws Bernoulli(0.3))",
    )
    init: str = choice(
        "he",
        HEBBIAN_INITS,
        doc="he: N(0, init_scale^2 * 2 / fan_in); normal: N(0, init_scale^2) (Hebbian_FFA's spiking layer); "
        "uniform: U(-a, a), a = init_scale / sqrt(fan_in) (torch.nn.Linear's default: its analog layer)",
    )
    init_scale: float = bounded(1.0, 0.0, doc="scale of the initial weights (see init)")
    symmetric_rule: str = choice(
        "gradient",
        SYMMETRIC_RULES,
        doc="symmetric factor: gradient: the FF loss gradient's gains, (target - P) / (G+ + eps) on the positive "
        "half, -(target - P) / (G- + eps) on the negative; notebook: Hebbian_FFA's hebbian_update, the same "
        "times (G+ + G- + 2 eps) / (G+ + G- + eps)",
    )
    sym_eps: float = bounded(
        0.01, 1e-9, doc="symmetric factor: eps added to each half's goodness, P = (G+ + eps) / (G+ + G- + 2 eps)"
    )
    p_clip: float = bounded(
        0.0,
        0.0,
        0.49,
        doc="a sample whose P is within p_clip of 0 or 1 adds no update (the gradient of a BCE of P clamped to "
        "[p_clip, 1 - p_clip], as Hebbian_FFA's analog loss clamps it at 1e-5); 0: off",
    )
    plasticity: str = choice(
        "presentation",
        PLASTICITY,
        doc="presentation: one update after each presentation, from the traces of all its steps; online: an "
        "update at each step from learn_from on, from that step's input and the output trace so far (the weights "
        "change during the presentation; Hebbian_FFA's spiking training)",
    )
    learn_from: int = bounded(0, 0, doc="online plasticity: the first step (0-based) that learns (Hebbian_FFA: 16)")
    eligibility_tau: float = bounded(
        0.0,
        0.0,
        1.0,
        doc="a carried eligibility trace E <- (1 - tau) E + tau dW at every update, across steps and samples, and "
        "W += lr E (Hebbian_FFA's elasticity trace); 0: none, W += lr dW",
    )
    goodness_at: str = choice(
        "mean",
        HEBBIAN_SCORES,
        doc="mean: the goodness of each step's trace, averaged over the steps; last: of the trace at the last "
        "presentation step (rest steps excluded), as Hebbian_FFA scores",
    )
    carry_membrane: bool = described(
        False,
        "online plasticity, LIF units: each training sample starts from the membrane the previous one left after "
        "its rest steps (Hebbian_FFA's layer never resets it); evaluation always starts from rest",
    )
    present: str = choice(
        "both",
        PRESENTATIONS,
        doc="both: each image once with its label and once with a wrong one; either: once, with its label or "
        "(probability 1/2) a wrong one (Hebbian_FFA)",
    )
    update: str = choice(
        "rule",
        HEBBIAN_UPDATES,
        doc="rule: W += lr dW; optimizer: -dW is the gradient train.optimizer steps with (for analog units with "
        "the gradient's factor, the FF loss gradient: Hebbian_FFA's analog twin, trained by Adam)",
    )


# The keys [spiking] held before the family had a table of its own.
_MOVED = (
    "neuron",
    "rest_steps",
    "third_factor",
    "scale",
    "eligibility_decay",
    "eligibility_rate",
    "top_k",
    "post_gate",
    "label_code",
    "code_bits",
    "init_scale",
)


class HebbianFamily(Family):
    name = "hebbian"
    summary = "neo-Hebbian spiking FF"
    settings = HebbianSettings
    moved_keys = {f"spiking.{name}": f"hebbian.{name}" for name in _MOVED}
    architectures = ("dense",)
    online_readout = False

    def validate(self, cfg: Config) -> None:
        m, t, h = cfg.model, cfg.train, self.options(cfg)
        if t.negatives not in ("random", "hard", "hardest") or cfg.readout.enabled or cfg.eval.predict != "goodness":
            raise ConfigError(
                "model.kind = 'hebbian' trains on wrong labels and predicts by goodness: set train.negatives to "
                "'random', 'hard' or 'hardest', readout.enabled = false, eval.predict = 'goodness'"
            )
        if m.goodness not in ("sum_squares", "mean_squares"):
            raise ConfigError(f"model.goodness: Hebbian layers use a squared norm, got {m.goodness!r}")
        if isinstance(m.theta, list):
            raise ConfigError("model.theta: Hebbian layers share one threshold; give a number")
        if h.post_gate != "none" and h.neuron != "lif":
            raise ConfigError("hebbian.post_gate: the surrogate gate is for LIF neurons; analog units need none")
        steps = cfg.spiking.steps
        if h.plasticity == "online":
            if h.goodness_at != "last":
                raise ConfigError(
                    "hebbian.plasticity = 'online' scores the trace as it stands at each step: set "
                    "hebbian.goodness_at = 'last'"
                )
            if h.post_gate != "none" or h.update != "rule":
                raise ConfigError(
                    "hebbian.plasticity = 'online' applies the plain rule at each step: it takes no post_gate and "
                    "update = 'rule'"
                )
            if h.learn_from >= steps:
                raise ConfigError(f"hebbian.learn_from = {h.learn_from}: a presentation has {steps} steps (0-based)")
        if h.carry_membrane and (h.plasticity != "online" or h.neuron != "lif"):
            raise ConfigError("hebbian.carry_membrane: LIF units carry their membrane under online plasticity only")
        # [hebbian] keys that these settings never read (checked here: the core's check reads its own sections)
        unread = [
            (h.third_factor != "symmetric", ("symmetric_rule", "sym_eps"), "only the symmetric third factor"),
            (h.plasticity != "online", ("learn_from",), "only online plasticity"),
            (h.plasticity == "online", ("eligibility_decay", "eligibility_rate"), "only presentation plasticity"),
        ]
        defaults = HebbianSettings()
        for applies, keys, reader in unread:
            changed = [f"hebbian.{k}" for k in keys if applies and getattr(h, k) != getattr(defaults, k)]
            if changed:
                raise ConfigError(f"{', '.join(changed)}: {reader} reads this; leave it at its default")

    def ignored_settings(self, cfg: Config) -> list[IgnoredRule]:
        h = self.options(cfg)
        return [
            (
                ["model.predict_layers"],
                "hebbian networks predict from every layer's goodness (each layer's own accuracy is in "
                "summary.json); only ff and spiking networks sum a chosen set",
            ),
            (
                ["train.schedule"],
                "hebbian networks train every layer on every batch; the greedy schedule is for ff and spiking ones",
            ),
            (
                [
                    *(() if h.update == "optimizer" else ("train.optimizer", "train.momentum", "train.weight_decay")),
                    "model.loss",
                    "model.alpha",
                    "model.objective",
                    "model.peer_weight",
                    "model.input_norm",
                    "model.activation",
                    "model.init",
                ],
                "the Hebbian rule adds lr times its own update to the weights (or, hebbian.update = 'optimizer', "
                "hands it to train.optimizer): no FF loss, peer normalisation or input normalisation; "
                "hebbian.neuron picks the units, hebbian.init and init_scale their weights",
            ),
            *self._ignored_by_rule(cfg),
        ]

    def _ignored_by_rule(self, cfg: Config) -> list[IgnoredRule]:
        if self.options(cfg).third_factor == "symmetric":
            return [(["model.theta"], "the symmetric third factor compares the halves' goodness: no threshold")]
        return []

    def build(self, cfg: Config, input_dim: int, num_classes: int, input_shape: tuple[int, ...] | None):
        from fflab.layers.hebbian import HebbianFFLayer
        from fflab.models.hebbian import HebbianFFNetwork, bernoulli_codes
        from fflab.models.stacks import neuron_options
        from fflab.supervision import label_codes

        m, s, h, seed = cfg.model, cfg.spiking, self.options(cfg), cfg.train.seed
        if h.label_code == "binary" and h.code_density != 0.5:
            codes = bernoulli_codes(num_classes, h.code_bits, h.code_density, seed)
        else:
            codes = label_codes(h.label_code, num_classes, h.code_bits, seed)
        widths = [input_dim + codes.shape[1], *m.hidden]
        layers = [
            HebbianFFLayer(
                widths[i],
                widths[i + 1],
                neuron=h.neuron,
                third_factor=h.third_factor,
                goodness=m.goodness,
                scale=h.scale,
                theta=m.theta,
                eligibility_decay=h.eligibility_decay,
                eligibility_rate=h.eligibility_rate,
                top_k=h.top_k,
                init_scale=h.init_scale,
                init=h.init,
                symmetric_rule=h.symmetric_rule,
                sym_eps=h.sym_eps,
                p_clip=h.p_clip,
                eligibility_tau=h.eligibility_tau,
                carry_membrane=h.carry_membrane,
                surrogate=s.surrogate,
                slope=s.slope,
                post_gate=h.post_gate,
                **neuron_options(s),
            )
            for i in range(len(m.hidden))
        ]
        return HebbianFFNetwork(
            layers,
            codes,
            encoder=s.encoder,
            steps=s.steps,
            rest_steps=h.rest_steps,
            gain=s.gain,
            seed=seed,
            plasticity=h.plasticity,
            learn_from=h.learn_from,
            goodness_at=h.goodness_at,
        )

    def make_trainer(self, model, cfg: Config, *, progress: bool = True, image_shape=None):
        from fflab.training.trainer import HebbianTrainer

        h = self.options(cfg)
        return HebbianTrainer(model, cfg.train, progress=progress, present=h.present, optimizer=h.update == "optimizer")

    def has_readout(self, model) -> bool:
        return False

    def latents(self, model, x):
        """Time-averaged traces, a chunk at a time, every chunk encoded from one seeded stream."""
        from fflab.batching import in_batches

        gen = model.eval_generator()
        return in_batches(lambda b: model.latents(b, gen), x, 200)

    def spike_trains(self, model, x):
        if model.layers[0].neuron != "lif":
            return None
        trains = model.spikes(x)
        return trains[:-1], trains[1:]

    def export_refusal(self, network, fmt: str) -> str | None:
        if any(layer.lif is None for layer in network.layers):
            return (
                f"this {self.name!r} network's units are analog (hebbian.neuron = 'relu'), not spiking neurons, "
                f"and fflab does not write a neo-Hebbian network of analog units as {fmt.upper()} yet"
            )
        return spiking_export_refusal(self.name, fmt)

    def inference_cost(self, model, trains, static_input: bool = True) -> dict:
        if trains is None:
            return super().inference_cost(model, trains, static_input)
        inputs, outputs = trains
        n = outputs[0].shape[1]
        synops = sum(
            (train != 0).sum().item() * layer.out_features / n
            for layer, train in zip(model.layers, inputs, strict=True)
        )
        return spiking_cost(model, outputs, synops, 0.0)


register_family(HebbianFamily)
