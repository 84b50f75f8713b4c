"""How labels enter the input, and how positive and negative data are made.

Supervised FF shows the network an image together with a label: the true label makes
positive data, a wrong label makes negative data. Label embeddings:
  overlay - the one-hot label replaces the first C pixels of the flattened image (Hinton 2022);
  concat  - the one-hot label is appended to the flattened image;
  channels - the one-hot label as C extra input channels (constant planes) of an image, for
            convolutional learners;
  pattern - a class-specific grating added over the whole image (spatially extended labels,
            Scodellaro et al. 2023), so that every receptive field of a convolution sees the label;
  none    - no label (unsupervised FF: negatives are hybrid images, see HybridPairs; or
            channel-wise competitive FF, which needs no negatives at all).
Overlay, concat and channels write the label into input positions that hold nothing else, which is
what lets prediction share the first layer's work across candidate labels (see FFNetwork).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fflab.vocab import LABEL_CODES, LABEL_MODES


def label_codes(kind: str, num_classes: int, bits: int, seed: int = 0) -> torch.Tensor:
    """One code row per class [C, bits]: the identity (onehot; bits = C) or random distinct bit patterns."""
    if kind == "onehot":
        return torch.eye(num_classes)
    if kind != "binary":
        raise ValueError(f"unknown label code {kind!r}; expected one of {list(LABEL_CODES)}")
    if 2**bits < num_classes:
        raise ValueError(f"{bits} code bits cannot give {num_classes} classes distinct codes")
    gen = torch.Generator().manual_seed(seed)
    while True:
        codes = torch.randint(0, 2, (num_classes, bits), generator=gen).float()
        if len(torch.unique(codes, dim=0)) == num_classes:
            return codes


class LabelEmbedding:
    """Writes one-hot labels into flattened inputs [N, D] at fixed positions.

    Label c occupies `width` consecutive positions from label_offset + c * width: one position
    (overlay, concat) or a whole H*W plane (channels). The pattern mode instead adds `value` times
    a grating to every pixel. Channels and pattern need the `image_shape` (C, H, W).

    With `at_input_max` (overlay, concat), the label is written not at `value` but at the largest value of the
    batch being labelled, `x.max()`, as mpezeshki's pytorch_forward_forward (and Nicola97's recurrent code) does:
    on standardised MNIST that is (1 - 0.1307) / 0.3081 = 2.82.
    """

    def __init__(
        self,
        mode: str,
        num_classes: int,
        input_dim: int,
        value: float = 1.0,
        image_shape: tuple[int, ...] | None = None,
        at_input_max: bool = False,
    ) -> None:
        if mode not in LABEL_MODES:
            raise ValueError(f"unknown label mode {mode!r}; expected one of {list(LABEL_MODES)}")
        if mode == "overlay" and num_classes > input_dim:
            raise ValueError(f"cannot overlay {num_classes} labels on an input of {input_dim} values")
        spatial = image_shape is not None and len(image_shape) == 3
        if mode in ("channels", "pattern") and not spatial:
            raise ValueError(f"label mode {mode!r} needs images (C, H, W), got input shape {image_shape}")
        if at_input_max and mode not in ("overlay", "concat"):
            raise ValueError(f"a label at the input's maximum is for overlay and concat labels, not {mode!r}")
        self.mode = mode
        self.num_classes = num_classes
        self.data_dim = input_dim
        self.value = value
        self.at_input_max = at_input_max
        self.width = image_shape[1] * image_shape[2] if mode == "channels" else 1
        self.patterns = label_gratings(num_classes, image_shape).flatten(1) if mode == "pattern" else None

    @property
    def shares_first_layer(self) -> bool:
        """Whether each label sits in one input position of its own (so a dense first layer can share
        its product across candidate labels)."""
        return self.mode in ("overlay", "concat")

    @property
    def input_dim(self) -> int:
        """Width of the embedded input the first layer sees."""
        appended = self.mode in ("concat", "channels")
        return self.data_dim + (self.num_classes * self.width if appended else 0)

    @property
    def extra_channels(self) -> int:
        """Input channels the label adds to an image (channels mode)."""
        return self.num_classes if self.mode == "channels" else 0

    @property
    def has_label(self) -> bool:
        return self.mode != "none"

    @property
    def label_offset(self) -> int:
        """Index of the first input position of label 0; label c starts at offset + c * width."""
        return 0 if self.mode == "overlay" else self.data_dim

    def value_for(self, x: torch.Tensor) -> float | torch.Tensor:
        """The value written for a label into the batch `x`: `value`, or x.max() (a 0-d tensor) with
        `at_input_max`."""
        return x.max() if self.at_input_max else self.value

    def _patterns_on(self, device: torch.device) -> torch.Tensor:
        """The class gratings, moved (once) to the device of the inputs."""
        if self.patterns.device != device:
            self.patterns = self.patterns.to(device)
        return self.patterns

    def blank(self, x: torch.Tensor) -> torch.Tensor:
        """The input with all label positions zero: [N, input_dim]."""
        x = x.flatten(1)
        if self.mode in ("none", "pattern"):
            return x
        if self.mode == "overlay":
            out = x.clone()
            out[:, : self.num_classes] = 0.0
            return out
        return torch.cat([x, x.new_zeros(x.shape[0], self.num_classes * self.width)], dim=1)

    def embed(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The input with the one-hot code of `labels` written into the label positions."""
        if not self.has_label:
            raise ValueError("this network takes no label (label mode 'none')")
        if self.mode == "pattern":
            return x.flatten(1) + self.value * self._patterns_on(x.device)[labels]
        out = self.blank(x)
        positions = self.label_offset + labels.unsqueeze(1) * self.width + torch.arange(self.width, device=out.device)
        out[torch.arange(out.shape[0], device=out.device).unsqueeze(1), positions] = self.value_for(x)
        return out

    def neutral(self, x: torch.Tensor) -> torch.Tensor:
        """The input with a uniform label code (value / C everywhere): no label information."""
        if self.mode == "pattern":
            return x.flatten(1) + self.value * self._patterns_on(x.device).mean(0)
        out = self.blank(x)
        if not self.has_label:
            return out
        span = self.num_classes * self.width
        out[:, self.label_offset : self.label_offset + span] = self.value_for(x) / self.num_classes
        return out


def label_gratings(num_classes: int, image_shape: tuple[int, ...], cycles: float = 3.0) -> torch.Tensor:
    """One zero-mean cosine grating per class [C, channels, H, W], in every channel: class c has
    orientation pi * c / C and `cycles` periods across the image, so any patch shows which class it is."""
    _, h, w = image_shape
    yy, xx = torch.meshgrid(torch.arange(h) / h, torch.arange(w) / w, indexing="ij")
    angles = torch.arange(num_classes) * math.pi / num_classes
    phase = xx * angles.cos().view(-1, 1, 1) + yy * angles.sin().view(-1, 1, 1)
    waves = torch.cos(2 * math.pi * cycles * phase)
    waves = waves - waves.mean((1, 2), keepdim=True)
    return waves.unsqueeze(1).expand(-1, image_shape[0], -1, -1).contiguous()


def random_wrong_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random label different from the true one, for every sample.

    Adding an offset in [1, C-1] modulo C can never return the true label and is uniform
    over the other C-1 labels. The draw is made on the CPU generator, so every device gets the same labels.
    """
    offset = torch.randint(1, num_classes, labels.shape, generator=generator).to(labels.device)
    return (labels + offset) % num_classes


def permuted_labels(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The batch's labels in a random order (mpezeshki's `y[torch.randperm(x.size(0))]`, and Nicola97's): NOT
    always wrong. About one row in C gets its own label back, and that "negative" is a positive; this reproduces
    a bug of that code and is never a default (train.negatives = "permuted_with_repeats")."""
    return labels[torch.randperm(len(labels), generator=generator).to(labels.device)]


def hard_wrong_labels(
    scores: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The wrong labels the model finds most plausible (Hinton 2022, section 3.3).

    `scores` [N, C] rank the candidate labels (higher = more like positive data). With a
    generator, a wrong label is sampled with probability softmax(score / temperature) over the
    wrong labels; without one, the highest-scoring wrong label is taken. The true label is
    masked out first, so it can never be chosen.
    """
    masked = scores.float().scatter(1, labels.unsqueeze(1), float("-inf"))
    if generator is None:
        return masked.argmax(1)
    probs = torch.softmax(masked / temperature, dim=1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(labels.device)


def wrong_labels(
    negatives: str,
    labels: torch.Tensor,
    num_classes: int,
    generator: torch.Generator,
    scores: torch.Tensor | Callable[[], torch.Tensor] | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Each sample's negative label, never its true one: "random" (uniform over the wrong labels), "hard"
    (sampled by softmax(score / temperature) over them) or "hardest" (the best-scoring one). The hard modes rank
    by `scores` [N, C], or by what a callable returns (called only when they need it). The one exception,
    "permuted_with_repeats", reproduces a bug: the batch's labels permuted, the true one now and then."""
    if negatives == "random":
        return random_wrong_labels(labels, num_classes, generator)
    if negatives == "permuted_with_repeats":
        return permuted_labels(labels, generator)
    if callable(scores):
        scores = scores()
    if scores is None:
        raise ValueError(f"negatives={negatives!r} need label scores from the model")
    return hard_wrong_labels(scores, labels, generator if negatives == "hard" else None, temperature)


class SupervisedPairs:
    """Positive data = input with its true label; negative data = the same input with a wrong label.

    negatives: "random" (uniform over wrong labels), "hard" (sampled in proportion to the
    model's belief in each wrong label) or "hardest" (the most believed wrong label). The hard
    modes need `scores` [N, C] ranking the labels, which the trainer supplies. "permuted_with_repeats" (the
    batch's labels permuted, sometimes the true one) reproduces mpezeshki's code.
    """

    def __init__(self, embedding: LabelEmbedding, negatives: str = "random", temperature: float = 1.0) -> None:
        if negatives not in ("random", "hard", "hardest", "permuted_with_repeats"):
            raise ValueError(f"negatives {negatives!r} are not label-based; expected random, hard or hardest")
        if not embedding.has_label:
            raise ValueError("label-based negatives need a label embedding (overlay or concat)")
        self.embedding = embedding
        self.negatives = negatives
        self.temperature = temperature

    @property
    def needs_scores(self) -> bool:
        """Whether `make` needs the model's label scores (hard negatives)."""
        return self.negatives in ("hard", "hardest")

    def wrong_labels(
        self, y: torch.Tensor, generator: torch.Generator, scores: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The negative labels `make` would draw for labels `y`."""
        return wrong_labels(self.negatives, y, self.embedding.num_classes, generator, scores, self.temperature)

    def make(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
        scores: torch.Tensor | None = None,
        wrong: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[2N, D]: the N positive rows, then the N negative rows (same images, wrong labels; `wrong` gives them,
        drawn earlier, or they are drawn now)."""
        if wrong is None:
            wrong = self.wrong_labels(y, generator, scores)
        return torch.cat([self.embedding.embed(x, y), self.embedding.embed(x, wrong)])


BLUR_KERNEL = (0.25, 0.5, 0.25)


def hybrid_masks(n: int, shape: tuple[int, int], blur_steps: int, generator: torch.Generator) -> torch.Tensor:
    """Binary masks [n, H, W] with large coherent regions (Hinton 2022, section 3.2).

    A random bit image is blurred `blur_steps` times with the filter [1/4, 1/2, 1/4] in both the
    horizontal and vertical directions (edges replicated), then thresholded at 0.5.
    A mask that came out all ones or all zeros would make the "negative" a real image, so such
    masks are drawn again.
    """
    if shape[0] * shape[1] < 2:
        raise ValueError(f"hybrid masks need images of at least 2 pixels, got {shape}")
    masks = _blurred_bits(n, shape, blur_steps, generator)
    while True:
        covered = masks.flatten(1).mean(1)
        uniform = (covered == 0) | (covered == 1)
        if not uniform.any():
            return masks
        masks[uniform] = _blurred_bits(int(uniform.sum()), shape, blur_steps, generator)


def _blurred_bits(n: int, shape: tuple[int, int], blur_steps: int, generator: torch.Generator) -> torch.Tensor:
    h, w = shape
    m = torch.randint(0, 2, (n, 1, h, w), generator=generator).float()
    k = torch.tensor(BLUR_KERNEL)
    kx, ky = k.view(1, 1, 1, 3), k.view(1, 1, 3, 1)
    for _ in range(blur_steps):
        m = F.conv2d(F.pad(m, (1, 1, 0, 0), mode="replicate"), kx)
        m = F.conv2d(F.pad(m, (0, 0, 1, 1), mode="replicate"), ky)
    return (m > 0.5).float().squeeze(1)


class HybridPairs:
    """Unsupervised FF: positive data = real images; negative data = hybrids of two different images.

    negative = mask * image_a + (1 - mask) * image_b keeps short-range correlations (each region
    is real) but breaks long-range shape, so telling them apart needs shape features. Image b is
    another image of the same batch: a cyclic shift of a random order, so never the image itself.
    """

    needs_scores = False

    def __init__(self, image_shape: tuple[int, ...], blur_steps: int = 6) -> None:
        self.image_shape = tuple(image_shape)  # (C, H, W)
        self.blur_steps = blur_steps

    def make(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, scores: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[2N, D]: the N real images, then N hybrids."""
        n = len(x)
        if n < 2:
            raise ValueError("hybrid negatives need at least two images per batch")
        images = x.reshape(n, *self.image_shape)
        order = torch.randperm(n, generator=generator)
        partner = torch.empty_like(order)
        partner[order] = order.roll(1)  # i -> another index, never i
        mask = hybrid_masks(n, self.image_shape[-2:], self.blur_steps, generator).unsqueeze(1).to(x.device)
        hybrid = mask * images + (1 - mask) * images[partner]
        return torch.cat([images.flatten(1), hybrid.flatten(1)])


class PositiveOnly:
    """No negative data: the batch as it is (channel-wise competitive FF, whose loss compares the
    goodness of each class's channel group on positive data alone)."""

    needs_scores = False

    def make(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, scores: torch.Tensor | None = None
    ) -> torch.Tensor:
        return x.flatten(1)


def make_pair_source(
    embedding: LabelEmbedding, image_shape: tuple[int, ...], settings
) -> SupervisedPairs | HybridPairs | PositiveOnly:
    """The positive/negative data maker the train settings ask for."""
    if settings.negatives == "none":
        return PositiveOnly()
    if settings.negatives == "hybrid":
        return HybridPairs(image_shape, settings.hybrid_blur_steps)
    return SupervisedPairs(embedding, settings.negatives, settings.hard_temperature)
