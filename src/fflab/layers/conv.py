"""Convolutional and locally connected FF learners for images.

Both map an image-shaped input [N, C, H, W] (or its flattened rows) to feature maps:
normalise the input's direction -> convolution (shared weights) or locally connected map
(one filter bank per output position, as in Hinton 2022's CIFAR-10 nets) -> activation ->
optional max-pool -> optional batch norm (the normalisation between learners of channel-wise
competitive FF). Goodness is taken over the whole map ("sample"), at each spatial position
("position") or in each channel ("channel"); the FF loss then separates positive from negative
data at every position or channel separately, and the layer's score is the mean over them.
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import nn

from fflab.layers.base import FFLearner, require_choice
from fflab.layers.dense import ACTIVATIONS, INIT_GAIN, INITS, normalize_direction

SCOPES = ("sample", "position", "channel")
CONV_INPUT_NORMS = ("length", "rms", "none")


class SpatialFFLearner(FFLearner, abc.ABC):
    """What convolutional and locally connected learners share; subclasses define `pre_activation`."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int,
        *,
        kernel: int = 3,
        pool: int = 1,
        batch_norm: bool = False,
        scope: str = "sample",
        activation: str = "relu",
        input_norm: str = "rms",
        **learner_options,
    ) -> None:
        super().__init__(**learner_options)
        require_choice("activation", activation, ACTIVATIONS)
        require_choice("goodness scope", scope, SCOPES)
        require_choice("input_norm", input_norm, CONV_INPUT_NORMS)
        c, h, w = in_shape
        if kernel % 2 == 0 or kernel < 1:
            raise ValueError(f"kernel must be an odd size (padding keeps the map size), got {kernel}")
        if h % pool or w % pool:
            raise ValueError(f"a {h}x{w} map cannot be max-pooled by {pool}: pick a pool that divides both sides")
        self.in_shape = (c, h, w)
        self.out_channels = out_channels
        self.kernel = kernel
        self.pool = pool
        self.scope = scope
        self.activation = activation
        self.input_norm = input_norm
        self._act = ACTIVATIONS[activation]
        self.norm = nn.BatchNorm2d(out_channels, eps=1e-4) if batch_norm else None
        self.register_peer_mean(out_channels)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        _, h, w = self.in_shape
        return (self.out_channels, h // self.pool, w // self.pool)

    @property
    def in_features(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_features(self) -> int:
        return math.prod(self.out_shape)

    @abc.abstractmethod
    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, out_channels, H, W] (same-size padding)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.input_norm != "none":
            x = normalize_direction(x.reshape(n, -1), self.input_norm)
        h = self._act(self.pre_activation(x.reshape(n, *self.in_shape)))
        if self.pool > 1:
            h = F.max_pool2d(h, self.pool)
        return self.norm(h) if self.norm is not None else h

    def unit_goodness(self, h: torch.Tensor) -> torch.Tensor:
        """Goodness of each position or channel [N, K] (K = 1 for the whole map)."""
        n, c, height, width = h.shape
        if self.scope == "sample":
            return self._goodness(h).unsqueeze(1)
        if self.scope == "position":
            return self._goodness(h.permute(0, 2, 3, 1).reshape(n * height * width, c)).view(n, height * width)
        return self._goodness(h.reshape(n * c, height * width)).view(n, c)

    def unit_activity(self, h: torch.Tensor) -> torch.Tensor:
        """Mean activity of each channel (a channel's units share one feature)."""
        return h.mean((0, 2, 3))

    def extra_repr(self) -> str:
        return (
            f"in_shape={self.in_shape}, out_channels={self.out_channels}, kernel={self.kernel}, pool={self.pool}, "
            f"scope={self.scope}, goodness={self.goodness_name}, loss={self.loss_name}"
        )


def _init_weight(weight: torch.Tensor, init: str, activation: str, fan_in: int) -> None:
    """Kaiming (He) or Xavier scaling for a weight whose rows see `fan_in` inputs each."""
    require_choice("init", init, INITS)
    gain = nn.init.calculate_gain(INIT_GAIN.get(activation, "linear"))
    if init == "kaiming":
        nn.init.normal_(weight, 0.0, gain / math.sqrt(fan_in))
    elif init == "xavier":
        nn.init.normal_(weight, 0.0, gain * math.sqrt(2.0 / (fan_in + weight.shape[-1])))


class FFConv2d(SpatialFFLearner):
    """A convolutional FF learner (shared weights, stride 1, same padding, optional channel groups)."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int,
        *,
        kernel: int = 3,
        groups: int = 1,
        init: str = "kaiming",
        **options,
    ) -> None:
        super().__init__(in_shape, out_channels, kernel=kernel, **options)
        in_channels = in_shape[0]
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"channel groups must divide the input ({in_channels}) and output ({out_channels}) channels; "
                f"got groups = {groups}"
            )
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, groups=groups)
        if init != "torch":
            _init_weight(self.conv.weight, init, self.activation, in_channels // groups * kernel * kernel)
            nn.init.zeros_(self.conv.bias)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def forward_flops(self) -> int:
        """Multiply-add FLOPs of one input's convolution (2 per multiply-add)."""
        _, h, w = self.in_shape
        return 2 * self.conv.weight[0].numel() * self.out_channels * h * w


MAX_LOCAL_WEIGHTS = 1 << 26  # entries of a locally connected layer's dense weight (256 MB of float32)


def receptive_field_mask(in_shape: tuple[int, int, int], out_channels: int, kernel: int) -> torch.Tensor:
    """[out_channels*H*W, C*H*W] bool: output unit (o, y, x) sees input (c, y', x') iff |y - y'| and |x - x'|
    are at most kernel // 2 (same-size padding: fields are cut at the border)."""
    c, h, w = in_shape
    r = kernel // 2

    def band(n: int) -> torch.Tensor:
        i = torch.arange(n)
        return ((i.view(-1, 1) - i.view(1, -1)).abs() <= r).float()

    field = torch.kron(band(h), band(w))  # [(y, x), (y', x')]
    return torch.kron(torch.ones(out_channels, c), field).bool()


class FFLocal2d(SpatialFFLearner):
    """A locally connected FF learner: like a convolution, but every output position has its own filters.

    Hinton (2022) used these on CIFAR-10 (e.g. 11x11 receptive fields) because weight sharing is
    biologically implausible. The layer is computed as one dense matrix product with a fixed
    receptive-field mask: that does more multiply-adds than the layer needs (a 32x32x3 map with 11x11
    fields uses 12% of them) but runs at matrix-product speed, about 40x faster on a CPU than
    gathering every patch (unfold), whose memory traffic dominates for maps with few channels.
    """

    def __init__(
        self, in_shape: tuple[int, int, int], out_channels: int, *, kernel: int = 3, init: str = "kaiming", **options
    ) -> None:
        super().__init__(in_shape, out_channels, kernel=kernel, **options)
        c, h, w = in_shape
        n_in, n_out = c * h * w, out_channels * h * w
        if n_in * n_out > MAX_LOCAL_WEIGHTS:
            raise ValueError(
                f"a locally connected layer from {c}x{h}x{w} to {out_channels}x{h}x{w} needs a {n_out}x{n_in} masked "
                f"weight, over the limit of {MAX_LOCAL_WEIGHTS:,} entries: use fewer channels or a smaller map"
            )
        self.register_buffer("mask", receptive_field_mask(self.in_shape, out_channels, kernel), persistent=False)
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(out_channels, h, w))
        patch = c * kernel * kernel  # inputs of a unit away from the border
        if init == "torch":
            nn.init.uniform_(self.weight, -1 / math.sqrt(patch), 1 / math.sqrt(patch))
        else:
            _init_weight(self.weight, init, self.activation, patch)
        with torch.no_grad():
            self.weight.mul_(self.mask)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        out = x.reshape(n, -1) @ (self.weight * self.mask).t()  # masked entries get zero gradient
        return out.view(n, self.out_channels, h, w) + self.bias

    def forward_flops(self) -> int:
        """Multiply-add FLOPs of the dense product as executed (masked entries included)."""
        return 2 * self.weight.numel()
