"""The NumPy reference layer: its hand-written gradients against finite differences, and FFDense against it."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from fflab.layers import FFDense
from fflab.reference import ReferenceFFLayer, xavier_uniform

IN, OUT, N_POS, N_NEG = 12, 6, 5, 4


def reference_of(layer: FFDense) -> ReferenceFFLayer:
    """A reference layer with the torch layer's weights and options."""
    return ReferenceFFLayer(
        layer.linear.weight.detach().double().numpy(),
        layer.linear.bias.detach().double().numpy(),
        activation=layer.activation,
        input_norm=layer.input_norm,
        goodness=layer.goodness_name,
        theta=layer.theta,
        objective=layer.objective,
        loss=layer.loss_name,
        alpha=layer.alpha,
    )


def torch_layer(activation: str, seed: int = 0, **options) -> FFDense:
    """A float64 FFDense with xavier weights and a random (non-zero) bias, so db is exercised too."""
    torch.manual_seed(seed)
    layer = FFDense(IN, OUT, activation=activation, init="xavier", **options).double()
    with torch.no_grad():
        layer.linear.bias.uniform_(-0.5, 0.5)
    return layer


def batch(n_pos: int = N_POS, n_neg: int = N_NEG, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_pos, IN)) * 3.0, rng.normal(size=(n_neg, IN))


def assert_relu_away_from_kink(ref: ReferenceFFLayer, *xs: np.ndarray, margin: float = 1e-3) -> None:
    """The ReLU derivative is undefined at 0; keep every pre-activation clear of it."""
    if ref.activation == "relu":
        assert np.abs(ref.preactivation(np.concatenate(xs))).min() > margin


def torch_loss_and_grads(layer: FFDense, x_pos: np.ndarray, x_neg: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    layer.zero_grad()
    x = torch.from_numpy(np.concatenate([x_pos, x_neg]))
    loss = layer.local_loss(layer(x), len(x_pos))[0]
    loss.backward()
    return loss.item(), layer.linear.weight.grad.numpy().copy(), layer.linear.bias.grad.numpy().copy()


def assert_matches_torch(layer: FFDense, x_pos: np.ndarray, x_neg: np.ndarray) -> None:
    ref = reference_of(layer)
    assert_relu_away_from_kink(ref, x_pos, x_neg)
    with torch.no_grad():
        h = layer(torch.from_numpy(x_pos)).numpy()
    np.testing.assert_allclose(ref.forward(x_pos), h, rtol=1e-12, atol=1e-14)
    loss_t, dW_t, db_t = torch_loss_and_grads(layer, x_pos, x_neg)
    loss_r, dW_r, db_r = ref.loss_and_grads(x_pos, x_neg)
    assert abs(dW_r).max() > 1e-4  # the comparison is not between two zeros
    assert loss_r == pytest.approx(loss_t, rel=1e-12)
    np.testing.assert_allclose(dW_r, dW_t, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(db_r, db_t, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("input_norm", ["length", "rms"])
@pytest.mark.parametrize("objective", ["standard", "inverted"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_loss_and_gradients_match_ffdense(activation, objective, input_norm):
    layer = torch_layer(activation, goodness="sum_squares", objective=objective, input_norm=input_norm, theta=1.5)
    assert_matches_torch(layer, *batch())


@pytest.mark.parametrize(
    ("goodness", "loss"), [("mean_squares", "softplus"), ("sum_squares", "symba"), ("mean_squares", "symba")]
)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_other_goodness_and_losses_match_ffdense(activation, goodness, loss):
    layer = torch_layer(activation, goodness=goodness, loss=loss, objective="inverted", alpha=2.5, theta=0.3)
    assert_matches_torch(layer, *batch(N_POS, N_POS))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_sgd_step_matches_torch_sgd(activation):
    layer = torch_layer(activation, input_norm="length")
    ref = reference_of(layer)
    x_pos, x_neg = batch()
    assert_relu_away_from_kink(ref, x_pos, x_neg)
    opt = torch.optim.SGD(layer.parameters(), lr=0.3)
    loss_t = torch_loss_and_grads(layer, x_pos, x_neg)[0]
    opt.step()
    assert ref.step(x_pos, x_neg, lr=0.3) == pytest.approx(loss_t, rel=1e-12)
    np.testing.assert_allclose(ref.W, layer.linear.weight.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ref.b, layer.linear.bias.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert not np.allclose(ref.W, reference_of(torch_layer(activation, input_norm="length")).W)  # it did move


@pytest.mark.parametrize(("activation", "gain"), [("tanh", 5 / 3), ("relu", math.sqrt(2))])
def test_xavier_init_has_torch_distribution(activation, gain):
    fan_in, fan_out = 600, 1400
    bound = gain * math.sqrt(6 / (fan_in + fan_out))
    ref = ReferenceFFLayer.xavier(fan_in, fan_out, np.random.default_rng(0), activation=activation)
    torch.manual_seed(0)
    w_torch = FFDense(fan_in, fan_out, activation=activation, init="xavier").linear.weight.detach().double().numpy()
    assert ref.W.shape == w_torch.shape == (fan_out, fan_in)
    assert not ref.b.any()
    for w in (ref.W, w_torch):
        assert bound * 0.999 < np.abs(w).max() <= bound
        assert abs(w.mean()) < 0.01 * bound
        assert w.var() == pytest.approx(bound**2 / 3, rel=0.02)
    assert ref.W.var() == pytest.approx(w_torch.var(), rel=0.03)
    assert xavier_uniform(3, 5, 1.0, np.random.default_rng(0)).shape == (5, 3)


def finite_difference(f, p: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() in every entry of the array p (perturbed in place)."""
    grad = np.zeros_like(p)
    for idx in np.ndindex(p.shape):
        orig = p[idx]
        p[idx] = orig + step
        up = f()
        p[idx] = orig - step
        down = f()
        p[idx] = orig
        grad[idx] = (up - down) / (2 * step)
    return grad


@pytest.mark.parametrize(
    ("activation", "goodness", "loss", "objective", "input_norm"),
    [
        ("tanh", "sum_squares", "softplus", "standard", "rms"),
        ("tanh", "mean_squares", "symba", "inverted", "length"),
        ("relu", "sum_squares", "softplus", "inverted", "length"),
        ("relu", "mean_squares", "symba", "standard", "rms"),
    ],
)
def test_reference_gradients_match_finite_differences(activation, goodness, loss, objective, input_norm):
    rng = np.random.default_rng(3)
    ref = ReferenceFFLayer(
        rng.normal(size=(3, 4)),
        rng.normal(size=3) * 0.5,
        activation=activation,
        input_norm=input_norm,
        goodness=goodness,
        theta=0.7,
        objective=objective,
        loss=loss,
        alpha=3.0,
    )
    x_pos, x_neg = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    assert_relu_away_from_kink(ref, x_pos, x_neg)

    def loss_value() -> float:
        return ref.loss_and_grads(x_pos, x_neg)[0]

    _, dW, db = ref.loss_and_grads(x_pos, x_neg)
    assert abs(dW).max() > 1e-3
    np.testing.assert_allclose(dW, finite_difference(loss_value, ref.W), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(db, finite_difference(loss_value, ref.b), rtol=1e-6, atol=1e-9)


def test_bad_options_name_the_problem():
    w, b = np.zeros((2, 3)), np.zeros(2)
    with pytest.raises(ValueError, match="activation"):
        ReferenceFFLayer(w, b, activation="gelu")
    with pytest.raises(ValueError, match="objective"):
        ReferenceFFLayer(w, b, objective="sideways")
    with pytest.raises(ValueError, match="W"):
        ReferenceFFLayer(w, np.zeros(3))
    with pytest.raises(ValueError, match="pairs"):
        ReferenceFFLayer(w, b, loss="symba").loss_and_grads(np.ones((2, 3)), np.ones((1, 3)))


def test_reference_does_not_import_torch():
    code = "import sys, fflab.reference; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
