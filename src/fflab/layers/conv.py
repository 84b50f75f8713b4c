"""Convolutional and locally connected FF learners for images.

Both map an image-shaped input [N, C, H, W] (or its flattened rows) to feature maps:
normalise the input (its direction, or per class group of channels) -> convolution (shared weights)
or locally connected map (one filter bank per output position, as in Hinton 2022's CIFAR-10 and MNIST
nets) -> activation -> optional dropout (training only) -> optional max or average pooling ->
optional batch norm (the normalisation between learners of channel-wise competitive FF). Goodness is
taken over the whole map ("sample"), at each spatial position ("position") or in each channel
("channel"); the FF loss then separates positive from negative data at every position or channel
separately, and the layer's score is the mean over them.
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import nn

from fflab.layers.base import FFLearner, require_choice
from fflab.layers.dense import ACTIVATIONS, INIT_GAIN, normalize_direction
from fflab.layers.local import TiledLocalLinear
from fflab.vocab import CONV_INPUT_NORMS, INITS, PADDINGS, POOLS, SCOPES


def field_geometry(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int]:
    """(output size, offset of the first field) along one side of a map.

    "same": fields centred on every stride-th input position (cut at the border), so stride 1 keeps the
    size; "valid": fields lie wholly inside the map, stride apart (Hinton 2022's grids of locations)."""
    if padding == "same":
        if kernel % 2 == 0:
            raise ValueError(
                f"kernel must be an odd size with padding 'same' (a field centres on a pixel), got {kernel}"
            )
        return (size - 1) // stride + 1, -(kernel // 2)
    if kernel > size:
        raise ValueError(f"a {kernel}-wide field does not fit in a map {size} wide (padding 'valid')")
    return (size - kernel) // stride + 1, 0


def rms_pool2d(h: torch.Tensor, size: int) -> torch.Tensor:
    """Root-mean-square pooling: sqrt of the mean of h^2 over each size x size window. A patch of the pooled map
    has the same mean square as the patch of the map it came from, so goodness taken after it equals goodness taken
    before (ASGE's pooling). A silent window gives 0 with a zero gradient (not sqrt's infinite one at 0)."""
    energy = F.avg_pool2d(h.square(), size)
    return energy.clamp_min(1e-12).sqrt() * (energy > 0)


def channel_layer_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each sample's channels at each position standardised to mean 0 and variance 1 ([N, C, H, W]; layer norm over
    C without a learned scale or shift)."""
    return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], eps=eps).permute(0, 3, 1, 2)


class SpatialFFLearner(FFLearner, abc.ABC):
    """What convolutional and locally connected learners share; subclasses define `pre_activation`."""

    shares_filters = True  # a channel's units at all positions compute one feature

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int,
        *,
        kernel: int = 3,
        stride: int = 1,
        padding: str = "same",
        pool: int = 1,
        pool_mode: str = "max",
        batch_norm: bool = False,
        dropout: float = 0.0,
        scope: str = "sample",
        activation: str = "relu",
        input_norm: str = "rms",
        **learner_options,
    ) -> None:
        super().__init__(**learner_options)
        require_choice("activation", activation, ACTIVATIONS)
        require_choice("goodness scope", scope, SCOPES)
        require_choice("input_norm", input_norm, CONV_INPUT_NORMS)
        require_choice("padding", padding, PADDINGS)
        require_choice("pool mode", pool_mode, POOLS)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a fraction in [0, 1), got {dropout}")
        if kernel < 1 or stride < 1:
            raise ValueError(f"kernel and stride must be positive, got kernel {kernel}, stride {stride}")
        c, h, w = in_shape
        (mh, self.offset), (mw, _) = (field_geometry(side, kernel, stride, padding) for side in (h, w))
        if mh % pool or mw % pool:
            raise ValueError(f"a {mh}x{mw} map cannot be pooled by {pool}: pick a pool that divides both sides")
        self.in_shape = (c, h, w)
        self.map_size = (mh, mw)  # before pooling
        self.out_channels = out_channels
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.pool = pool
        self.pool_mode = pool_mode
        self._pool = {"max": F.max_pool2d, "avg": F.avg_pool2d, "rms": rms_pool2d}[pool_mode]
        self.dropout = float(dropout)
        self.scope = scope
        self.activation = activation
        self.input_norm = input_norm
        # "group": one group of channels per class where they split so (the competitive learner below), else one
        self.norm_groups = self.num_classes if self.num_classes and c % self.num_classes == 0 else 1
        self._act = ACTIVATIONS[activation]
        self.norm = nn.BatchNorm2d(out_channels, eps=1e-4) if batch_norm else None
        self.register_peer_mean(out_channels if self.shares_filters else self.out_features)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        h, w = self.map_size
        return (self.out_channels, h // self.pool, w // self.pool)

    @property
    def in_features(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_features(self) -> int:
        return math.prod(self.out_shape)

    @abc.abstractmethod
    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, out_channels, *map_size]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = x.reshape(n, *self.in_shape)
        if self.input_norm == "group":  # DeeperForward: each sample standardised per class group of channels
            x = F.group_norm(x, self.norm_groups)
        elif self.input_norm == "channel":  # ASGE: each position's channels standardised (layer norm over C)
            x = channel_layer_norm(x)
        elif self.input_norm != "none":
            x = normalize_direction(x.reshape(n, -1), self.input_norm).view_as(x)
        h = self._act(self.pre_activation(x))
        if self.dropout and self.training:
            h = F.dropout(h, self.dropout)  # scaled by 1/(1-p), so goodness keeps its scale at test time
        if self.pool > 1:
            h = self._pool(h, self.pool)
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
        """Mean activity of each channel where its units share one feature, else of each unit."""
        return h.mean((0, 2, 3)) if self.shares_filters else h.mean(0).flatten()

    def extra_repr(self) -> str:
        return (
            f"in_shape={self.in_shape}, out_channels={self.out_channels}, kernel={self.kernel}, "
            f"stride={self.stride}, padding={self.padding}, pool={self.pool} ({self.pool_mode}), "
            f"dropout={self.dropout}, input_norm={self.input_norm}, "
            f"scope={self.scope}, goodness={self.goodness_name}, loss={self.loss_name}"
        )


def _init_weight(weight: torch.Tensor, init: str, activation: str, fan_in: int, fan_out: int) -> None:
    """Kaiming (He) or Xavier (normal) scaling for a weight whose units see `fan_in` inputs each and whose
    inputs each reach `fan_out` units (counted by the layer: neither is a dimension of the weight tensor)."""
    require_choice("init", init, INITS)
    gain = nn.init.calculate_gain(INIT_GAIN.get(activation, "linear"))
    if init == "kaiming":
        nn.init.normal_(weight, 0.0, gain / math.sqrt(fan_in))
    elif init == "xavier":
        nn.init.normal_(weight, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))
    elif init == "he_normal":
        nn.init.normal_(weight, 0.0, math.sqrt(2.0 / fan_in))
    elif init == "normal_fan_out":
        nn.init.normal_(weight, 0.0, 1.0 / math.sqrt(fan_out))


class FFConv2d(SpatialFFLearner):
    """A convolutional FF learner (shared weights, optional channel groups, optional bias)."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int,
        *,
        kernel: int = 3,
        groups: int = 1,
        init: str = "kaiming",
        bias: bool = True,
        **options,
    ) -> None:
        super().__init__(in_shape, out_channels, kernel=kernel, **options)
        in_channels = in_shape[0]
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"channel groups must divide the input ({in_channels}) and output ({out_channels}) channels; "
                f"got groups = {groups}"
            )
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel, stride=self.stride, padding=-self.offset, groups=groups, bias=bias
        )
        if init != "torch":
            area = kernel * kernel
            _init_weight(
                self.conv.weight, init, self.activation, in_channels // groups * area, out_channels // groups * area
            )
            if bias:
                nn.init.zeros_(self.conv.bias)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last: oneDNN's grouped convolutions and the max-pool after them run 2-10x faster on it (CPU)
        return self.conv(x.contiguous(memory_format=torch.channels_last))

    def forward_flops(self) -> int:
        """Multiply-add FLOPs of one input's convolution (2 per multiply-add)."""
        h, w = self.map_size
        return 2 * self.conv.weight[0].numel() * self.out_channels * h * w


# entries of a locally connected layer's dense weight and mask, which exist only while it is built (512 MB of
# float32): it is initialised in the dense layout, then tiled (`TiledLocalLinear`). 2^27 admits the CIFAR-10
# recurrent net with 6 units per location (a 6,144 x 12,288 weight in its middle layer).
MAX_LOCAL_WEIGHTS = 1 << 27


def require_local_size(n_out: int, n_in: int, layer: str) -> None:
    """ValueError unless the dense n_out x n_in weight a locally connected layer is built from fits under
    MAX_LOCAL_WEIGHTS."""
    if n_out * n_in > MAX_LOCAL_WEIGHTS:
        raise ValueError(
            f"{layer} is built from a {n_out}x{n_in} dense weight, over the limit of {MAX_LOCAL_WEIGHTS:,} "
            "entries: use fewer channels or a smaller map"
        )


def receptive_field_mask(
    in_shape: tuple[int, int, int], out_channels: int, kernel: int, stride: int = 1, padding: str = "same"
) -> torch.Tensor:
    """[out_channels*H'*W', C*H*W] bool: output unit (o, i, j) sees input (c, y, x) iff y lies in
    [offset + i*stride, offset + i*stride + kernel), and likewise x (see `field_geometry`)."""
    c, h, w = in_shape

    def band(size: int) -> torch.Tensor:
        n_out, offset = field_geometry(size, kernel, stride, padding)
        start = offset + stride * torch.arange(n_out).view(-1, 1)
        inputs = torch.arange(size).view(1, -1)
        return ((inputs >= start) & (inputs < start + kernel)).float()

    field = torch.kron(band(h), band(w))  # [(i, j), (y, x)]
    return torch.kron(torch.ones(out_channels, c), field).bool()


class FFLocal2d(SpatialFFLearner):
    """A locally connected FF learner: like a convolution, but every output position has its own filters.

    Hinton (2022) used these on CIFAR-10 (e.g. 11x11 receptive fields) and for unsupervised MNIST (grids
    of strided fields) because weight sharing is biologically implausible. The product runs tile by tile
    (`TiledLocalLinear`): each tile of output positions is a dense product over the input window its fields
    cover, which wastes far fewer multiply-adds than one masked dense product and runs at matrix-product
    speed, unlike gathering every patch (unfold), whose memory traffic dominates for maps with few channels.
    """

    shares_filters = False  # every unit is its own feature, for peer normalisation too

    def __init__(
        self, in_shape: tuple[int, int, int], out_channels: int, *, kernel: int = 3, init: str = "kaiming", **options
    ) -> None:
        super().__init__(in_shape, out_channels, kernel=kernel, **options)
        c, h, w = in_shape
        mh, mw = self.map_size
        n_in, n_out = c * h * w, out_channels * mh * mw
        require_local_size(n_out, n_in, f"a locally connected layer from {c}x{h}x{w} to {out_channels}x{mh}x{mw}")
        # initialised in the dense layout, so a seed gives the same weights as before the tiled product
        weight = torch.empty(n_out, n_in)
        self.bias = nn.Parameter(torch.zeros(out_channels, mh, mw))
        mask = receptive_field_mask(self.in_shape, out_channels, kernel, self.stride, self.padding)
        patch = c * kernel * kernel  # inputs of a unit away from the border
        if init == "torch":
            nn.init.uniform_(weight, -1 / math.sqrt(patch), 1 / math.sqrt(patch))
        else:
            _init_weight(weight, init, self.activation, patch, int(mask.sum(0).max()))  # units an input reaches
        self.product = TiledLocalLinear(weight, mask, (out_channels, mh, mw))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        out = self.product(x.reshape(len(x), -1))
        return out.view(len(x), self.out_channels, *self.map_size) + self.bias

    def forward_flops(self) -> int:
        """Multiply-add FLOPs of the tiled product as executed (masked and padding entries included)."""
        return 2 * self.product.weight.numel()

    def upgrade_state(self, state: dict, prefix: str) -> bool:
        """A checkpoint from before the tiled product holds the dense weight under `weight`: move it to where
        the product converts it."""
        if prefix + "weight" not in state:
            return False
        state[prefix + "product.weight"] = state.pop(prefix + "weight")
        return True
