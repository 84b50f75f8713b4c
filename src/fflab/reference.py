"""Pure-NumPy reference of one dense FF layer step, with gradients written out by hand.

This module is a transparent specification of the maths that `fflab.layers.FFDense` and
`fflab.objectives` implement on PyTorch: the tests build both, copy the weights across and
compare loss, gradients and an SGD step. Nothing here uses autograd (or torch at all); every
gradient is a chain rule spelled out term by term, so a reader can check the derivation and
a test can check it against finite differences independently of torch.

The layer, for a batch x [N, D] whose first rows are positive data and the rest negative:

    u = x / sqrt(sum_j x_j^2 + eps)          (times sqrt(D) for input_norm "rms")
    z = u @ W.T + b                          W [out, D], b [out]
    h = act(z)                               tanh or relu
    g = sum_k h_k^2                          (divided by out for goodness "mean_squares")
    l = sign * (g - theta)                   sign = +1 standard, -1 inverted objective
    softplus: L = 0.5 * (mean_pos softplus(-l) + mean_neg softplus(l))
    symba:    L = mean_i softplus(-alpha * sign * (g_pos_i - g_neg_i))   (pos/neg rows paired)

The input is a constant: FF layers receive detached inputs, so no gradient flows into x.
Computations run in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

ACTIVATIONS = ("tanh", "relu")
INPUT_NORMS = ("length", "rms")
GOODNESS = ("sum_squares", "mean_squares")
OBJECTIVES = ("standard", "inverted")
LOSSES = ("softplus", "symba")

# torch.nn.init.calculate_gain for the supported activations.
XAVIER_GAIN = {"tanh": 5.0 / 3.0, "relu": math.sqrt(2.0)}


def xavier_uniform(fan_in: int, fan_out: int, gain: float, rng: np.random.Generator) -> np.ndarray:
    """Weight [fan_out, fan_in] drawn from U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)).

    The same distribution as torch.nn.init.xavier_uniform_ on an nn.Linear weight.
    """
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=(fan_out, fan_in))


def softplus(v: np.ndarray) -> np.ndarray:
    """log(1 + exp(v)), without overflow."""
    return np.logaddexp(0.0, v)


def sigmoid(v: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-v)), the derivative of softplus, without overflow."""
    return np.exp(-np.logaddexp(0.0, -v))


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {list(allowed)}")


@dataclass
class ReferenceFFLayer:
    """One dense FF layer: weight W [out, in], bias b [out] and its local FF objective."""

    W: np.ndarray
    b: np.ndarray
    activation: str = "tanh"
    input_norm: str = "rms"
    goodness: str = "sum_squares"
    theta: float = 1.0
    objective: str = "standard"
    loss: str = "softplus"
    alpha: float = 4.0
    eps: float = 1e-8

    def __post_init__(self) -> None:
        self.W = np.array(self.W, dtype=np.float64)
        self.b = np.array(self.b, dtype=np.float64)
        if self.W.ndim != 2 or self.b.shape != (self.W.shape[0],):
            raise ValueError(f"expected W [out, in] and b [out]; got {self.W.shape} and {self.b.shape}")
        _check("activation", self.activation, ACTIVATIONS)
        _check("input_norm", self.input_norm, INPUT_NORMS)
        _check("goodness", self.goodness, GOODNESS)
        _check("objective", self.objective, OBJECTIVES)
        _check("loss", self.loss, LOSSES)

    @classmethod
    def xavier(
        cls, in_features: int, out_features: int, rng: np.random.Generator, activation: str = "tanh", **options: Any
    ) -> ReferenceFFLayer:
        """A layer with FFDense's "xavier" init: xavier-uniform W with the activation's gain, zero b."""
        _check("activation", activation, ACTIVATIONS)
        W = xavier_uniform(in_features, out_features, XAVIER_GAIN[activation], rng)
        return cls(W, np.zeros(out_features), activation=activation, **options)

    @property
    def sign(self) -> float:
        """+1 if positive data should have high goodness (standard), -1 if low (inverted)."""
        return 1.0 if self.objective == "standard" else -1.0

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Each row's direction: unit length ("length") or length sqrt(D) ("rms"); eps as in fflab."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        inv = 1.0 / np.sqrt((x**2).sum(1, keepdims=True) + self.eps)
        if self.input_norm == "rms":
            inv = inv * math.sqrt(x.shape[1])
        return x * inv

    def preactivation(self, x: np.ndarray) -> np.ndarray:
        """z = normalize(x) @ W.T + b."""
        return self.normalize(x) @ self.W.T + self.b

    def act(self, z: np.ndarray) -> np.ndarray:
        """The activation: tanh(z) or max(z, 0)."""
        return np.tanh(z) if self.activation == "tanh" else np.maximum(z, 0.0)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Activity h = act(z)."""
        return self.act(self.preactivation(x))

    def goodness_of(self, h: np.ndarray) -> np.ndarray:
        """One score per row: sum (or mean) of squared activities."""
        g = (h**2).sum(1)
        return g / h.shape[1] if self.goodness == "mean_squares" else g

    def loss_and_dg(self, g_pos: np.ndarray, g_neg: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """(L, dL/dg_pos, dL/dg_neg) of the FF loss on the goodness of positive and negative rows."""
        s = self.sign
        if self.loss == "symba":
            if len(g_pos) != len(g_neg):
                raise ValueError(f"symba pairs rows: {len(g_pos)} positive vs {len(g_neg)} negative")
            # m_i = -alpha s (g_pos_i - g_neg_i); L = mean softplus(m); dL/dm_i = sigmoid(m_i) / N.
            m = -self.alpha * s * (g_pos - g_neg)
            dm = sigmoid(m) / len(m)
            return float(softplus(m).mean()), -self.alpha * s * dm, self.alpha * s * dm
        # l = s (g - theta); positive rows: 0.5/N_pos softplus(-l), negative rows: 0.5/N_neg softplus(l).
        l_pos, l_neg = s * (g_pos - self.theta), s * (g_neg - self.theta)
        loss = 0.5 * (softplus(-l_pos).mean() + softplus(l_neg).mean())
        dg_pos = -0.5 / len(g_pos) * sigmoid(-l_pos) * s
        dg_neg = 0.5 / len(g_neg) * sigmoid(l_neg) * s
        return float(loss), dg_pos, dg_neg

    def loss_and_grads(self, x_pos: np.ndarray, x_neg: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """(L, dL/dW, dL/db) for one batch of positive and negative inputs; x is a constant."""
        x = np.concatenate([np.asarray(x_pos, dtype=np.float64), np.asarray(x_neg, dtype=np.float64)])
        n_pos = len(x_pos)
        u = self.normalize(x)
        z = u @ self.W.T + self.b
        h = self.act(z)
        g = self.goodness_of(h)
        loss, dg_pos, dg_neg = self.loss_and_dg(g[:n_pos], g[n_pos:])
        dL_dg = np.concatenate([dg_pos, dg_neg])  # [N]
        # dg/dh = 2h (sum_squares) or 2h/out (mean_squares).
        dg_dh = 2.0 * h / h.shape[1] if self.goodness == "mean_squares" else 2.0 * h
        # dh/dz = 1 - tanh(z)^2 = 1 - h^2, or the relu step 1[z > 0].
        dh_dz = 1.0 - h**2 if self.activation == "tanh" else (z > 0).astype(np.float64)
        dL_dz = dL_dg[:, None] * dg_dh * dh_dz  # [N, out]
        # z_nk = sum_j u_nj W_kj + b_k, so dL/dW_kj = sum_n dL/dz_nk u_nj and dL/db_k = sum_n dL/dz_nk.
        return loss, dL_dz.T @ u, dL_dz.sum(0)

    def step(self, x_pos: np.ndarray, x_neg: np.ndarray, lr: float) -> float:
        """One plain SGD update W -= lr dL/dW, b -= lr dL/db; returns the loss before the update."""
        loss, dW, db = self.loss_and_grads(x_pos, x_neg)
        self.W -= lr * dW
        self.b -= lr * db
        return loss
