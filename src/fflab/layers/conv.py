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

import math

import torch
import torch.nn.functional as F
from torch import nn

from fflab.layers.base import FFLearner
from fflab.layers.dense import ACTIVATIONS, INITS, normalize_direction

SCOPES = ("sample", "position", "channel")
CONV_INPUT_NORMS = ("length", "rms", "none")


class SpatialFFLearner(FFLearner):
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
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
        if scope not in SCOPES:
            raise ValueError(f"unknown goodness scope {scope!r}; expected one of {list(SCOPES)}")
        if input_norm not in CONV_INPUT_NORMS:
            raise ValueError(f"unknown input_norm {input_norm!r}; expected one of {list(CONV_INPUT_NORMS)}")
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

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, out_channels, H, W] (same-size padding)."""
        raise NotImplementedError

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
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {list(INITS)}")
    gain = nn.init.calculate_gain(activation if activation in ("relu", "tanh", "sigmoid") else "linear")
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


class FFLocal2d(SpatialFFLearner):
    """A locally connected FF learner: like a convolution, but every output position has its own filters.

    Hinton (2022) used these on CIFAR-10 (e.g. 11x11 receptive fields) because weight sharing is
    biologically implausible. The map is an unfold followed by one batched product per position.
    """

    def __init__(
        self, in_shape: tuple[int, int, int], out_channels: int, *, kernel: int = 3, init: str = "kaiming", **options
    ) -> None:
        super().__init__(in_shape, out_channels, kernel=kernel, **options)
        c, h, w = in_shape
        patch = c * kernel * kernel
        self.weight = nn.Parameter(torch.empty(h * w, patch, out_channels))  # [positions, patch, out]
        self.bias = nn.Parameter(torch.zeros(out_channels, h, w))
        if init == "torch":
            nn.init.uniform_(self.weight, -1 / math.sqrt(patch), 1 / math.sqrt(patch))
        else:
            _init_weight(self.weight, init, self.activation, patch)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        patches = F.unfold(x, self.kernel, padding=self.kernel // 2)  # [N, patch, positions]
        out = torch.bmm(patches.permute(2, 0, 1), self.weight)  # [positions, N, out]
        return out.permute(1, 2, 0).reshape(n, self.out_channels, h, w) + self.bias

    def forward_flops(self) -> int:
        return 2 * self.weight.numel()
