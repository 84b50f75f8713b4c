"""A stack of neo-Hebbian FF layers on rate-coded (or, analog twin, direct) image-and-label inputs.

The label enters as a code concatenated to the image: a one-hot vector, or a fixed random binary
code per class (drawn from a seed, so a checkpoint reproduces it). Positive data carry the true
label's code, negative data a wrong label's. Each layer learns from its own traces only; the layer
above is fed this layer's spikes (for analog units, its activity).

Plasticity "presentation" simulates a whole presentation and then updates each layer once; "online"
(Hebbian_FFA's spiking training) steps all layers through the presentation together and lets each learn at
every step from `learn_from` on, so the weights change while the sample is still shown. A layer's goodness is
that of each step's trace averaged over the steps ("mean"), or of the trace at the presentation's last step,
rest steps excluded ("last", Hebbian_FFA's compute_probs after its 23 steps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from fflab.batching import in_batches
from fflab.layers.hebbian import HebbianFFLayer
from fflab.models.feedforward import LocalResult
from fflab.models.prediction import Predictions, predict_from_scores
from fflab.spiking import encode
from fflab.vocab import HEBBIAN_SCORES, PLASTICITY

# apply(layer index, dW): how a presentation-wise update reaches the weights when not by the rule (an optimiser)
Apply = Callable[[int, torch.Tensor], None]


def bernoulli_codes(num_classes: int, bits: int, density: float, seed: int = 0) -> torch.Tensor:
    """One code row per class [C, bits] of Bernoulli(density) bits, drawn from `seed` until the rows are distinct
    (Hebbian_FFA: torch.bernoulli(torch.ones((10, 100)) * 0.3))."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(1000):
        codes = (torch.rand(num_classes, bits, generator=gen) < density).float()
        if len(torch.unique(codes, dim=0)) == num_classes:
            return codes
    raise ValueError(f"{bits} bits of density {density} gave no {num_classes} distinct codes in 1000 draws")


class HebbianFFNetwork(nn.Module):
    """Layers of HebbianFFLayer; predicts the label whose code makes the layers' P highest."""

    kind = "hebbian"  # its family (fflab.families)

    def __init__(
        self,
        layers: Sequence[HebbianFFLayer],
        codes: torch.Tensor,
        *,
        encoder: str = "rate",
        steps: int = 24,
        rest_steps: int = 0,
        gain: float = 1.0,
        seed: int = 0,
        plasticity: str = "presentation",
        learn_from: int = 0,
        goodness_at: str = "mean",
    ) -> None:
        super().__init__()
        if plasticity not in PLASTICITY:
            raise ValueError(f"unknown plasticity {plasticity!r}; expected one of {list(PLASTICITY)}")
        if goodness_at not in HEBBIAN_SCORES:
            raise ValueError(f"unknown goodness_at {goodness_at!r}; expected one of {list(HEBBIAN_SCORES)}")
        if plasticity == "online" and goodness_at != "last":
            raise ValueError("online plasticity scores the trace as it stands at each step: goodness_at = 'last'")
        if not 0 <= learn_from < steps:
            raise ValueError(f"learn_from must be a presentation step, 0..{steps - 1}; got {learn_from}")
        self.layers = nn.ModuleList(layers)
        self.register_buffer("codes", codes)
        self.encoder, self.steps, self.rest_steps, self.gain = encoder, steps, rest_steps, gain
        self.plasticity, self.learn_from, self.goodness_at = plasticity, learn_from, goodness_at
        self.eval_seed = seed  # evaluation encodes with its own fixed seed, so predictions are reproducible

    @property
    def num_classes(self) -> int:
        return self.codes.shape[0]

    def _encode(self, x: torch.Tensor, generator: torch.Generator | None, rest: bool = True) -> torch.Tensor:
        rest_steps = self.rest_steps if rest else 0
        return encode(x, self.encoder, self.steps, gain=self.gain, rest=rest_steps, generator=generator)

    def scored(self, post: torch.Tensor) -> torch.Tensor:
        """The steps of a trace [T, N, H] that goodness is taken of: all, or the presentation's last."""
        return post if self.goodness_at == "mean" else post[self.steps - 1 : self.steps]

    def input_train(
        self, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """[T, N, D + bits]: the encoded image next to the encoded label code (all zeros without a label)."""
        x = x.flatten(1)
        codes = self.codes[labels] if labels is not None else x.new_zeros(len(x), self.codes.shape[1])
        return torch.cat([self._encode(x, generator), self._encode(codes, generator)], dim=2)

    def simulate(self, train: torch.Tensor, learning: bool = False) -> list[tuple[torch.Tensor | None, torch.Tensor]]:
        """(presynaptic trace if `learning`, postsynaptic trace) of every layer for an input train."""
        return [(pre, post) for pre, post, _, _ in self._run_layers(train, learning)]

    def _run_layers(self, train: torch.Tensor, learning: bool) -> list[tuple]:
        """(presynaptic trace, postsynaptic trace, output train, postsynaptic gate) of every layer; each feeds
        the next."""
        out = []
        for layer in self.layers:
            post, spikes, pre, gate = layer.simulate(train, learning)
            out.append((pre, post, spikes, gate))
            train = spikes
        return out

    @torch.no_grad()
    def local_updates(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        wrong: torch.Tensor,
        lr: float,
        generator: torch.Generator,
        apply: Apply | None = None,
    ) -> list[LocalResult]:
        """One Hebbian step of every layer on positives (x, y) and negatives (x, wrong) together."""
        n = len(x)
        target = torch.cat([x.new_ones(n), x.new_zeros(n)])
        return self.learn(torch.cat([x, x]), torch.cat([y, wrong]), target, lr, generator, apply)

    @torch.no_grad()
    def learn(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        target: torch.Tensor,
        lr: float,
        generator: torch.Generator,
        apply: Apply | None = None,
    ) -> list[LocalResult]:
        """One Hebbian step of every layer on the images x shown with `labels`, positive where `target` is 1.
        `apply` takes each layer's update in place of the rule's W += lr dW (presentation plasticity only)."""
        train = self.input_train(x, labels, generator)
        if self.plasticity == "online":
            if apply is not None:
                raise ValueError("online plasticity applies its updates by the rule, not through an optimiser")
            return self._learn_online(train, target, lr)
        results = []
        for i, (layer, (pre, post, _, gate)) in enumerate(
            zip(self.layers, self._run_layers(train, learning=True), strict=True)
        ):
            scored = self.scored(post)
            results.append(LocalResult(layer.loss(scored, target), layer.probability(scored)))
            if apply is None:
                layer.update(pre, post, target, lr, gate, None if scored is post else scored)
            else:
                apply(i, layer.update_direction(pre, post, target, gate, None if scored is post else scored))
        return results

    @property
    def online_rest(self) -> str:
        """What an online presentation does with its rest steps: "none" where no layer carries its membrane to the
        next sample (nothing after them reads it), "silent" where every layer rests silently (its membrane only
        decays), else "run" (the input products of every rest step)."""
        if not self.rest_steps or not any(layer.carry_membrane for layer in self.layers):
            return "none"
        return "silent" if all(layer.rests_silently for layer in self.layers) else "run"

    def _learn_online(self, train: torch.Tensor, target: torch.Tensor, lr: float) -> list[LocalResult]:
        """Step every layer through the input train; at presentation steps learn_from..steps-1 each layer applies
        its update from that step's input and its output trace so far. The rest steps only run the neurons
        (they matter where a layer carries its membrane to the next sample)."""
        n = train.shape[1]
        last = [None] * len(self.layers)
        for layer in self.layers:
            layer.begin_online(n)
        # Steps 0..learn_from see the weights as they are (the first update follows step learn_from's own spikes),
        # so each layer takes their input currents in one product; from then on the weights change every step.
        first = self.learn_from + 1
        pre_seq = train[:first]
        for j, layer in enumerate(self.layers):
            currents = pre_seq @ layer.weight.t()
            outs = []
            for t in range(first):
                out, post = layer.online_step(pre_seq[t], currents[t])
                outs.append(out)
            layer.learn_step(pre_seq[-1], post, target, lr)
            last[j] = post.unsqueeze(0)
            pre_seq = torch.stack(outs)
        for t in range(first, self.steps):
            pre = train[t]
            for j, layer in enumerate(self.layers):
                out, post = layer.online_step(pre)
                layer.learn_step(pre, post, target, lr)
                pre = out
                last[j] = post.unsqueeze(0)
        rest = self.online_rest
        if rest == "silent":
            for layer in self.layers:
                layer.rest_online(self.rest_steps)
        elif rest == "run":
            for t in range(self.steps, self.steps + self.rest_steps):
                pre = train[t]
                for layer in self.layers:
                    pre = layer.online_step(pre)[0]
        for layer in self.layers:
            layer.end_online()
        return [
            LocalResult(layer.loss(post, target), layer.probability(post))
            for layer, post in zip(self.layers, last, strict=True)
        ]

    def eval_generator(self) -> torch.Generator:
        """The random source of evaluation encodings: fixed, so predictions are reproducible."""
        return torch.Generator().manual_seed(self.eval_seed)

    @torch.no_grad()
    def label_scores(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Each layer's P for every candidate label [N, C, L]. The image is encoded once and shared by all
        candidates, so they differ only in the label code."""
        gen = generator or self.eval_generator()
        n, c = len(x), self.num_classes
        rest = self.goodness_at == "mean"  # scored at the last presentation step, the rest steps change nothing
        image = self._encode(x.flatten(1), gen, rest).repeat_interleave(c, 1)
        codes = self._encode(self.codes.repeat(n, 1), gen, rest)
        sims = self.simulate(torch.cat([image, codes], dim=2))
        probs = [layer.probability(self.scored(post)) for layer, (_, post) in zip(self.layers, sims, strict=True)]
        return torch.stack(probs, 1).view(n, c, -1)

    @torch.no_grad()
    def latents(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Time-averaged traces (firing activity) of all layers with no label code [N, sum of widths]."""
        gen = generator or self.eval_generator()
        return torch.cat([post.mean(0) for _, post in self.simulate(self.input_train(x, None, gen))], 1)

    @torch.no_grad()
    def spikes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input train and every layer's output train [T, N, .] with no label code (analog units: activity)."""
        train = self.input_train(x, None, self.eval_generator())
        return [train, *(spikes for _, _, spikes, _ in self._run_layers(train, learning=False))]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-class scores [N, C]: every layer's P for each label code, summed (argmax: the prediction); the
        inputs are encoded from the network's own evaluation seed, so a call is reproducible."""
        return self.label_scores(x, self.eval_generator()).sum(2)

    @torch.no_grad()
    def predictions(self, x: torch.Tensor, batch_size: int = 1000) -> Predictions:
        """Predicted labels by the summed P of all layers ("goodness") and by each layer alone."""
        self.eval()
        gen = self.eval_generator()  # one seeded stream for the set: a rerun with the same batches draws the same
        # T steps x C candidates per sample: at most 200 samples at once bounds the memory
        scores = in_batches(lambda b: self.label_scores(b, gen), x, min(batch_size, 200))
        per_layer = [predict_from_scores(scores, [j]) for j in range(len(self.layers))] if len(self.layers) > 1 else []
        return Predictions({"goodness": predict_from_scores(scores, range(len(self.layers)))}, per_layer)

    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """The label of highest summed P for each input; equal to `forward(x).argmax(1)` when x is one chunk."""
        return self.predictions(x, batch_size)["goodness"]

    def forward_flops(self) -> int:
        """Input-product FLOPs of one sample's simulation (spike inputs counted as dense products)."""
        return sum(layer.forward_flops(self.steps + self.rest_steps) for layer in self.layers)
