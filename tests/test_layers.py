"""Dense FF layer: direction-only input, the shared-product prediction path, init choices."""

import pytest
import torch

from fflab.layers import FFDense, normalize_direction
from fflab.supervision import LabelEmbedding


def test_normalize_direction_unit_length_and_rms():
    x = torch.randn(5, 16) * 7
    assert torch.allclose(normalize_direction(x, "length").norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(normalize_direction(x, "rms").pow(2).mean(1), torch.ones(5), atol=1e-4)


@pytest.mark.parametrize("norm", ["length", "rms"])
def test_layer_passes_on_direction_only(norm):
    torch.manual_seed(0)
    layer = FFDense(16, 8, input_norm=norm)
    x = torch.rand(4, 16) + 0.1
    assert torch.allclose(layer(x), layer(x * 37.0), atol=1e-5)


@pytest.mark.parametrize("mode", ["overlay", "concat"])
@pytest.mark.parametrize(("norm", "activation"), [("length", "relu"), ("rms", "relu"), ("rms", "tanh")])
def test_label_candidates_equal_forward_on_each_embedded_input(mode, norm, activation):
    torch.manual_seed(0)
    emb = LabelEmbedding(mode, 10, 64, value=1.5)
    layer = FFDense(emb.input_dim, 32, input_norm=norm, activation=activation)
    x = torch.rand(6, 64)
    fast = layer.forward_label_candidates(emb.blank(x), emb.label_offset, 10, emb.value)
    for c in range(10):
        slow = layer(emb.embed(x, torch.full((6,), c)))
        assert torch.allclose(fast[:, c], slow, atol=1e-5)


@pytest.mark.parametrize("goodness", ["mean_squares", "sum_squares"])
@pytest.mark.parametrize(("norm", "activation"), [("rms", "relu"), ("length", "tanh"), ("none", "relu")])
def test_label_candidate_goodness_is_the_goodness_of_each_candidates_activity(goodness, norm, activation):
    """The one-label-at-a-time path (hard-negative scoring) gives exactly the numbers of the batched one."""
    torch.manual_seed(0)
    emb = LabelEmbedding("overlay", 10, 64, value=1.5)
    layer = FFDense(emb.input_dim, 32, input_norm=norm, activation=activation, goodness=goodness)
    x = torch.rand(6, 64)
    blank = emb.blank(x)
    per_label = layer.label_candidate_goodness(blank, emb.label_offset, 10, emb.value)
    batched = layer.forward_label_candidates(blank, emb.label_offset, 10, emb.value)
    assert per_label.shape == (6, 10)
    assert torch.equal(per_label, layer.goodness(batched.reshape(60, 32)).view(6, 10))


# The functions each activation name must mean, written out independently of the layer's own table.
NAMED_ACTIVATIONS = {
    "relu": lambda z: z.clamp(min=0),
    "tanh": torch.tanh,
    "gelu": lambda z: 0.5 * z * (1 + torch.erf(z / 2**0.5)),
    "sigmoid": lambda z: 1 / (1 + torch.exp(-z)),
    "silu": lambda z: z / (1 + torch.exp(-z)),
    "leaky_relu": lambda z: torch.where(z > 0, z, 0.01 * z),
}


@pytest.mark.parametrize("activation", sorted(NAMED_ACTIVATIONS))
@pytest.mark.parametrize("init", ["kaiming", "xavier", "torch"])
def test_activation_and_init_choices_compute_what_they_name(activation, init):
    torch.manual_seed(0)
    layer = FFDense(20, 10, activation=activation, init=init)
    x = torch.rand(3, 20)
    pre = layer.linear(normalize_direction(x, layer.input_norm))
    assert torch.allclose(layer(x), NAMED_ACTIVATIONS[activation](pre), atol=1e-6)
    # kaiming and xavier start with zero bias; "torch" keeps nn.Linear's own uniform bias.
    assert (layer.linear.bias.abs().sum() == 0) == (init != "torch")


def test_kaiming_and_xavier_have_their_scales():
    torch.manual_seed(0)
    k = FFDense(1000, 1000, init="kaiming").linear.weight
    x = FFDense(1000, 1000, init="xavier", activation="tanh").linear.weight
    assert k.var().item() == pytest.approx(2 / 1000, rel=0.05)
    assert x.var().item() == pytest.approx((5 / 3) ** 2 * 2 / 2000, rel=0.05)


def test_bad_layer_options_name_the_problem():
    with pytest.raises(ValueError, match="activation"):
        FFDense(4, 4, activation="swishy")
    with pytest.raises(ValueError, match="init"):
        FFDense(4, 4, init="zeros")
    with pytest.raises(ValueError, match="goodness"):
        FFDense(4, 4, goodness="cubes")
