"""Dense (fully connected) FF layer, as in Hinton (2022)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fflab.layers.base import FFLearner, require_choice
from fflab.layers.kept_cast import KeptCast
from fflab.vocab import INITS, INPUT_NORMS


def relu_straight_through(x: torch.Tensor) -> torch.Tensor:
    """max(x, 0) in the forward pass, with gradient 1 everywhere, as if no unit were silent: loeweX/Forward-Forward's
    ReLU_full_grad (whose backward returns grad_output unchanged)."""
    return x + (torch.relu(x) - x).detach()


ACTIVATIONS = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
    "silu": F.silu,
    "leaky_relu": F.leaky_relu,  # negative slope 0.01, as torch's default (and and-rewsmith's F.leaky_relu)
    "relu_straight_through": relu_straight_through,
}

# Gain names torch.nn.init understands, per activation (for Kaiming and Xavier scaling).
INIT_GAIN = {
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "relu_straight_through": "relu",
}


def normalize_direction(x: torch.Tensor, mode: str = "length", eps: float = 1e-8) -> torch.Tensor:
    """Pass on only the direction of each row of `x`.

    length: scale to unit Euclidean length (Hinton 2022);
    rms:    the same direction scaled to length sqrt(D), i.e. unit root-mean-square per unit,
            so that standard initialisations see inputs of unit scale;
    none:   the input as it is (CheneyX2000's layers: the goodness below is then visible above).
    The goodness of the layer below is thereby hidden from the layer above.
    """
    if mode == "none":
        return x
    inv = torch.rsqrt(x.pow(2).sum(1, keepdim=True) + eps)
    if mode == "rms":
        inv = inv * math.sqrt(x.shape[1])
    return x * inv


class FFDense(FFLearner):
    """normalise input direction -> linear -> activation; trained by its own FF loss."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        activation: str = "relu",
        init: str = "kaiming",
        input_norm: str = "rms",
        bias: bool = True,
        **learner_options,
    ) -> None:
        """`learner_options` are FFLearner's: goodness, theta, objective, loss, alpha, peer_weight, peer_momentum."""
        super().__init__(**learner_options)
        require_choice("activation", activation, ACTIVATIONS)
        require_choice("init", init, INITS)
        require_choice("input_norm", input_norm, INPUT_NORMS)
        self.activation = activation
        self.input_norm = input_norm
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.weight_cast = KeptCast()  # see `product_weight`
        self._act = ACTIVATIONS[activation]
        self._init(init)
        self.register_peer_mean(out_features)

    def _init(self, init: str) -> None:
        gain_name = INIT_GAIN.get(self.activation, "linear")
        weight = self.linear.weight
        if init == "kaiming":
            nn.init.kaiming_normal_(weight, nonlinearity=gain_name)
        elif init == "xavier":
            nn.init.xavier_uniform_(weight, gain=nn.init.calculate_gain(gain_name))
        elif init == "he_normal":  # CheneyX2000's np.random.randn(in, out) * sqrt(2 / in), for any activation
            nn.init.normal_(weight, 0.0, math.sqrt(2.0 / weight.shape[1]))
        elif init == "normal_fan_out":  # loeweX's normal_(std=1 / sqrt(weight.shape[0]))
            nn.init.normal_(weight, 0.0, 1.0 / math.sqrt(weight.shape[0]))
        if init != "torch" and self.linear.bias is not None:
            nn.init.zeros_(self.linear.bias)

    def forward_flops(self) -> int:
        """Multiply-add FLOPs of one input's forward product."""
        return 2 * self.in_features * self.out_features

    def product_weight(self) -> torch.Tensor:
        """The weight for this layer's products: under CPU autocast, where `CastAdam` steps this layer, the
        bfloat16 copy it wrote as it stepped (`KeptCast`); otherwise the weight, which autocast casts itself (a
        kept copy would go stale under optimisers that do not move the weight's version counter)."""
        weight = self.linear.weight
        if self.weight_cast.collect_gradient and weight.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            return self.weight_cast.of(weight, torch.get_autocast_dtype("cpu"))
        return weight

    def kept_casts(self) -> dict[torch.Tensor, KeptCast]:
        return {self.linear.weight: self.weight_cast}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize_direction(x.flatten(1), self.input_norm)
        return self._act(F.linear(x, self.product_weight(), self.linear.bias))

    def _candidate_parts(
        self, blank: torch.Tensor, label_offset: int, num_classes: int, label_value: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What every candidate label's pre-activation is made of: `shared` [N, H] (the product of the blank
        inputs, bias included), the inputs' normalising factors `inv` [N, 1] and the label columns [C, H].
        Candidate c's pre-activation is shared + inv * label_cols[c].

        `blank` holds the inputs with zeros at the C label positions. Writing label c adds `label_value` at
        position offset + c, which changes neither the input's length nor the shared product blank @ W.T, so
        every candidate costs one column addition instead of a full matrix product.
        """
        if self.input_norm == "none":
            inv = blank.new_ones(blank.shape[0], 1)
        else:
            sq_len = blank.pow(2).sum(1, keepdim=True) + label_value**2
            inv = torch.rsqrt(sq_len + 1e-8)
        if self.input_norm == "rms":
            inv = inv * math.sqrt(blank.shape[1])
        shared = F.linear(blank * inv, self.product_weight(), self.linear.bias)
        label_cols = label_value * self.linear.weight[:, label_offset : label_offset + num_classes].t()
        return shared, inv, label_cols

    def _activate_(self, pre: torch.Tensor) -> torch.Tensor:
        """The activation of a fresh pre-activation tensor, in place where it can be."""
        return torch.relu_(pre) if self.activation == "relu" else self._act(pre)

    def forward_label_candidates(
        self, blank: torch.Tensor, label_offset: int, num_classes: int, label_value: float
    ) -> torch.Tensor:
        """Activity for every candidate label at once: [N, C, out_features], equal to forward() on each
        embedded input (see `_candidate_parts`)."""
        shared, inv, label_cols = self._candidate_parts(blank, label_offset, num_classes, label_value)
        # One pass over the [N, C, H] result (it is C times larger than anything else here).
        return self._activate_(torch.addcmul(shared.unsqueeze(1), inv.unsqueeze(2), label_cols.unsqueeze(0)))

    def label_candidate_goodness(
        self, blank: torch.Tensor, label_offset: int, num_classes: int, label_value: float
    ) -> torch.Tensor:
        """goodness(forward_label_candidates(...)) [N, C], one candidate label at a time: each label's [N, H]
        activity stays in the CPU's cache, where the [N, C, H] tensor of all of them does not (3.5x faster for
        a 1,000-unit layer at batch 100, and the same numbers: each row's goodness sums the same values)."""
        shared, inv, label_cols = self._candidate_parts(blank, label_offset, num_classes, label_value)
        return torch.stack(
            [self.goodness(self._activate_(torch.addcmul(shared, inv, label_cols[c]))) for c in range(num_classes)],
            dim=1,
        )

    def extra_repr(self) -> str:
        return (
            f"activation={self.activation}, input_norm={self.input_norm}, goodness={self.goodness_name}, "
            f"theta={self.theta}, objective={self.objective}, loss={self.loss_name}"
        )
