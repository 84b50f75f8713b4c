"""The spatial-goodness learner: a convolutional FF learner that scores classes by spatial goodness patches, as the
paper on adaptive spatial goodness encoding describes it (ASGE; Gong, Staszewski & Xu, arXiv 2509.12394; read from
its text, its code could not be read here).

Each channel's map is cut into P x P patches; each patch's goodness is the mean square of the activity in it, so a
learner of C channels has a goodness vector g of C * P^2 values instead of one number (or one per channel group).
A fixed random affine map, drawn once and never trained, turns g into one score per class, a = W g + b, and the
learner's loss is the cross-entropy of those scores: fflab's competitive loss, softmax(alpha * a) against the labels.
No label enters the input and no negative data are made. Everything else is FFConv2d's (convolution, activation,
pooling, input normalisation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fflab.layers.conv import FFConv2d


def patch_goodness(h: torch.Tensor, patches: int) -> torch.Tensor:
    """[N, C * P^2]: the mean square of each channel's activity in each of its P x P patches (torch's adaptive
    pooling bins where P does not divide the map), ordered channel-major, then row, then column."""
    return F.adaptive_avg_pool2d(h.square(), patches).flatten(1)


class SpatialGoodnessConv2d(FFConv2d):
    """FFConv2d whose class scores are a fixed random affine map of its patch goodness (see the module doc).

    `patches` is P, the patches along each side of the learner's output map (after pooling; RMS pooling keeps
    each patch's mean square, so the goodness is the same as before it where P divides the pooled map). The map's
    weight and bias are buffers, drawn here from torch's generator as nn.Linear draws its own (uniform in
    +-1/sqrt(C * P^2)), saved with the weights and never updated.
    """

    def __init__(self, in_shape: tuple[int, int, int], out_channels: int, *, patches: int = 1, **options) -> None:
        super().__init__(in_shape, out_channels, **options)
        if self.loss_name != "competitive":
            raise ValueError(
                f"a spatial-goodness learner scores classes, so it takes the competitive loss; got {self.loss_name!r}"
            )
        _, h, w = self.out_shape
        if not 1 <= patches <= min(h, w):
            raise ValueError(f"patches must be in 1..{min(h, w)} (the output map is {h}x{w}), got {patches}")
        self.patches = patches
        width = out_channels * patches * patches
        bound = 1.0 / math.sqrt(width)
        self.register_buffer("projection", torch.empty(self.num_classes, width).uniform_(-bound, bound))
        self.register_buffer("projection_bias", torch.empty(self.num_classes).uniform_(-bound, bound))

    @property
    def encoding_width(self) -> int:
        """Values in the goodness vector: channels x patches^2."""
        return self.projection.shape[1]

    def spatial_goodness(self, h: torch.Tensor) -> torch.Tensor:
        """The goodness vector g [N, C * P^2] of the activity `h` [N, C, H, W]."""
        return patch_goodness(h, self.patches)

    def class_goodness(self, h: torch.Tensor) -> torch.Tensor:
        """Each class's score [N, num_classes]: the fixed affine map of the goodness vector, W g + b."""
        return F.linear(self.spatial_goodness(h), self.projection.to(h.dtype), self.projection_bias.to(h.dtype))

    def forward_flops(self) -> int:
        """The convolution's FLOPs and the fixed map's (2 per multiply-add)."""
        return super().forward_flops() + 2 * self.projection.numel()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, patches={self.patches}, encoding={self.encoding_width}"
