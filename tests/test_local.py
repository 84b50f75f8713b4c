"""The tiled locally connected product: the masked dense product it replaces, computed per tile of positions."""

import math

import pytest
import torch

from fflab.checkpoint import upgrade_saved_state
from fflab.config import config_from_dict
from fflab.layers.conv import FFLocal2d, field_geometry, receptive_field_mask
from fflab.layers.local import TiledLocalLinear
from fflab.models import build_model


def masked_dense(in_shape, out_channels, kernel, stride=1, padding="same", label=0):
    """A random masked dense weight, its mask and the output map shape; `label` appends a dense block of that
    many inputs every unit sees (the top recurrent layer's label)."""
    c, h, w = in_shape
    mh, mw = (field_geometry(side, kernel, stride, padding)[0] for side in (h, w))
    mask = receptive_field_mask(in_shape, out_channels, kernel, stride, padding)
    mask = torch.cat([mask, torch.ones(len(mask), label, dtype=torch.bool)], 1)
    return torch.randn(mask.shape) * mask, mask, (out_channels, mh, mw)


@pytest.mark.parametrize(
    ("in_shape", "out_channels", "kernel", "stride", "padding", "label"),
    [
        ((3, 32, 32), 3, 11, 1, "same", 0),  # Hinton's CIFAR-10 layer
        ((2, 9, 5), 3, 3, 1, "same", 0),  # a map no tile side divides
        ((1, 28, 28), 2, 10, 6, "valid", 0),  # the unsupervised MNIST net's strided grid
        ((3, 7, 7), 4, 3, 2, "same", 0),
        ((6, 12, 12), 3, 5, 1, "same", 10),  # two maps side by side and a dense label block
    ],
)
def test_tiled_product_equals_the_masked_dense_product(in_shape, out_channels, kernel, stride, padding, label):
    torch.manual_seed(0)
    dense, mask, out_shape = masked_dense(in_shape, out_channels, kernel, stride, padding, label)
    bias = torch.randn(len(dense))
    tiled = TiledLocalLinear(dense, mask, out_shape, bias=bias)
    assert torch.equal(tiled.to_dense(tiled.weight.detach()), dense)
    assert torch.equal(tiled.to_dense(tiled.mask), mask)
    x = torch.randn(5, dense.shape[1])
    y = tiled(x)
    assert torch.allclose(y, x @ dense.t() + bias, atol=1e-4)
    # the weight gradient is the dense one, restricted to the fields
    target = torch.randn_like(y)
    ((y - target) ** 2).sum().backward()
    expected = 2 * (x @ dense.t() + bias - target).t() @ x * mask
    assert torch.allclose(tiled.to_dense(tiled.weight.grad), expected, atol=1e-3)
    assert torch.all(tiled.weight.grad[~tiled.mask] == 0)


def test_cifar_fields_run_in_8x8_tiles_with_a_third_of_the_dense_work():
    dense, mask, out_shape = masked_dense((3, 32, 32), 3, 11)
    tiled = TiledLocalLinear(dense, mask, out_shape)
    assert tiled.side == 8 and tuple(tiled.weight.shape) == (16, 18 * 18 * 3, 8 * 8 * 3)
    assert tiled.weight.numel() < dense.numel() / 3  # 3.0M multiply-adds per row against 9.4M


def test_weights_outside_the_fields_stay_zero_under_adam_with_weight_decay():
    torch.manual_seed(0)
    dense, mask, out_shape = masked_dense((2, 9, 5), 3, 3)
    tiled = TiledLocalLinear(dense, mask, out_shape)
    opt = torch.optim.AdamW(tiled.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        tiled(torch.randn(4, dense.shape[1])).square().sum().backward()
        opt.step()
    assert torch.all(tiled.weight[~tiled.mask] == 0) and not torch.equal(tiled.to_dense(tiled.weight.detach()), dense)


def test_a_feed_forward_checkpoint_of_the_dense_layout_loads():
    torch.manual_seed(0)
    old = FFLocal2d((3, 8, 8), 2, kernel=3, input_norm="none")
    dense = old.product.to_dense(old.product.weight.detach())
    state = {k: v for k, v in old.state_dict().items() if k != "product.weight"}
    state["weight"] = dense + 1.0  # as saved before the tiled product, with entries outside the fields
    new = FFLocal2d((3, 8, 8), 2, kernel=3, input_norm="none")
    upgrade_saved_state(new, state)
    new.load_state_dict(state)
    mask = new.product.to_dense(new.product.mask)
    assert torch.equal(new.product.to_dense(new.product.weight.detach()), (dense + 1.0) * mask)
    x = torch.randn(4, 3, 8, 8)
    assert torch.allclose(new.pre_activation(x), (x.flatten(1) @ ((dense + 1.0) * mask).t()).view(4, 2, 8, 8))


@pytest.mark.parametrize("wiring", ["sum", "metalayer"])
def test_a_recurrent_checkpoint_of_the_dense_layout_loads(wiring):
    def net():
        torch.manual_seed(0)
        model = {"kind": "recurrent", "architecture": "local", "hidden": [2, 2], "kernel": 3, "wiring": wiring}
        cfg = config_from_dict({"model": {**model, "source_init": ["kaiming"] * 3}})
        return build_model(cfg.model, 64, 4, input_shape=(1, 8, 8))

    reference = net()
    state = reference.state_dict()
    for i, layer in enumerate(reference.layers):  # rewrite the state as the dense layout stored it
        blocks = [w.detach() for w in layer.source_weights()]
        if wiring == "sum":
            for name in ("up.weight", "rest.weight"):
                del state[f"layers.{i}.{name}"]
            state[f"layers.{i}.linear.weight"] = torch.cat(blocks, 1)
            state[f"layers.{i}.linear.bias"] = state.pop(f"layers.{i}.bias")
        else:
            for j, block in enumerate(blocks):
                state[f"layers.{i}.units.{j}.weight"] = block
    loaded = net()
    for layer in loaded.layers:  # start from other weights, so the load has to put them back
        with torch.no_grad():
            for p in layer.parameters():
                p.mul_(2.0)
    upgrade_saved_state(loaded, state)
    loaded.load_state_dict(state)
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(loaded.label_scores(x), reference.label_scores(x))
    assert math.isclose(loaded.layers[0].flops(), reference.layers[0].flops())
