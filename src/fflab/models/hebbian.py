"""A stack of neo-Hebbian FF layers on rate-coded (or, analog twin, direct) image-and-label inputs.

The label enters as a code concatenated to the image: a one-hot vector, or a fixed random binary
code per class (drawn from a seed, so a checkpoint reproduces it). Positive data carry the true
label's code, negative data a wrong label's. Each layer learns from its own traces only; the layer
above is fed this layer's spikes (for analog units, its activity).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fflab.batching import in_batches
from fflab.layers.hebbian import HebbianFFLayer
from fflab.models.feedforward import LocalResult
from fflab.models.prediction import Predictions, predict_from_scores
from fflab.spiking import encode


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
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.register_buffer("codes", codes)
        self.encoder, self.steps, self.rest_steps, self.gain = encoder, steps, rest_steps, gain
        self.eval_seed = seed  # evaluation encodes with its own fixed seed, so predictions are reproducible

    @property
    def num_classes(self) -> int:
        return self.codes.shape[0]

    def _encode(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return encode(x, self.encoder, self.steps, gain=self.gain, rest=self.rest_steps, generator=generator)

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
        self, x: torch.Tensor, y: torch.Tensor, wrong: torch.Tensor, lr: float, generator: torch.Generator
    ) -> list[LocalResult]:
        """One Hebbian step of every layer on positives (x, y) and negatives (x, wrong) together."""
        n = len(x)
        train = self.input_train(torch.cat([x, x]), torch.cat([y, wrong]), generator)
        target = torch.cat([x.new_ones(n), x.new_zeros(n)])
        results = []
        for layer, (pre, post, _, gate) in zip(self.layers, self._run_layers(train, learning=True), strict=True):
            results.append(LocalResult(layer.loss(post, target), layer.probability(post)))
            layer.update(pre, post, target, lr, gate)
        return results

    def eval_generator(self) -> torch.Generator:
        """The random source of evaluation encodings: fixed, so predictions are reproducible."""
        return torch.Generator().manual_seed(self.eval_seed)

    @torch.no_grad()
    def label_scores(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Each layer's P for every candidate label [N, C, L]. The image is encoded once and shared by all
        candidates, so they differ only in the label code."""
        gen = generator or self.eval_generator()
        n, c = len(x), self.num_classes
        image = self._encode(x.flatten(1), gen).repeat_interleave(c, 1)
        codes = self._encode(self.codes.repeat(n, 1), gen)
        sims = self.simulate(torch.cat([image, codes], dim=2))
        probs = [layer.probability(post) for layer, (_, post) in zip(self.layers, sims, strict=True)]
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
