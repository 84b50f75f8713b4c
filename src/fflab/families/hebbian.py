"""Neo-Hebbian FF (Terres-Escudero et al. 2024, arXiv 2406.16479; kind "hebbian"): LIF (or analog ReLU) layers
on the image and a label code, each learning by a gradient-free three-factor rule."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from fflab.errors import ConfigError
from fflab.families import register_family
from fflab.families.base import Family, IgnoredRule
from fflab.families.feedforward import spiking_cost
from fflab.schema import bounded, choice
from fflab.vocab import LABEL_CODES, NEURONS, POST_GATES, THIRD_FACTORS

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
    init_scale: float = bounded(1.0, 0.0, doc="weights start at N(0, init_scale^2 * 2 / fan_in)")


class HebbianFamily(Family):
    name = "hebbian"
    summary = "neo-Hebbian spiking FF"
    settings = HebbianSettings
    moved_keys = {f"spiking.{f.name}": f"hebbian.{f.name}" for f in fields(HebbianSettings)}
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

    def ignored_settings(self, cfg: Config) -> list[IgnoredRule]:
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
                    "train.optimizer",
                    "train.momentum",
                    "train.weight_decay",
                    "model.loss",
                    "model.alpha",
                    "model.objective",
                    "model.peer_weight",
                    "model.input_norm",
                    "model.activation",
                    "model.init",
                ],
                "the Hebbian rule adds lr times its own update to the weights: no optimiser, FF loss, peer "
                "normalisation or input normalisation; hebbian.neuron picks the units, hebbian.init_scale their "
                "weights",
            ),
        ]

    def build(self, cfg: Config, input_dim: int, num_classes: int, input_shape: tuple[int, ...] | None):
        from fflab.layers.hebbian import HebbianFFLayer
        from fflab.models.hebbian import HebbianFFNetwork
        from fflab.models.stacks import neuron_options
        from fflab.supervision import label_codes

        m, s, h, seed = cfg.model, cfg.spiking, self.options(cfg), cfg.train.seed
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
                surrogate=s.surrogate,
                slope=s.slope,
                post_gate=h.post_gate,
                **neuron_options(s),
            )
            for i in range(len(m.hidden))
        ]
        return HebbianFFNetwork(
            layers, codes, encoder=s.encoder, steps=s.steps, rest_steps=h.rest_steps, gain=s.gain, seed=seed
        )

    def make_trainer(self, model, cfg: Config, *, progress: bool = True, image_shape=None):
        from fflab.training.trainer import HebbianTrainer

        return HebbianTrainer(model, cfg.train, progress=progress)

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
