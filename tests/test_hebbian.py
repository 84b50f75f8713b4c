"""Neo-Hebbian FF: the rule equals FF gradient descent for analog units, it is local, and it learns."""

import os

import pytest
import torch
import torch.nn.functional as F

from fflab.config import ModelSettings, SpikingSettings, load_config
from fflab.layers.hebbian import HebbianFFLayer
from fflab.models import build_model
from fflab.supervision import label_codes
from fflab.training.run import train_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ff_loss_gradient(layer: HebbianFFLayer, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """dL/dW of the FF loss (BCE of P = sigmoid(s (G - theta))) by autograd, G the squared norm of relu(W x)."""
    w = layer.weight.detach().clone().requires_grad_(True)
    h = torch.relu(x @ w.t())  # [T, N, H]
    sq = h.pow(2)
    g = (sq.mean(-1) if layer.goodness_name == "mean_squares" else sq.sum(-1)).mean(0)
    p = torch.sigmoid(layer.scale * (g - layer.theta))
    F.binary_cross_entropy(p, target).backward()
    return w.grad


@pytest.mark.parametrize("goodness, theta", [("sum_squares", 6.0), ("mean_squares", 0.5)])
@pytest.mark.parametrize("steps", [1, 3])
def test_hebbian_update_equals_the_ff_loss_gradient_for_relu_units(goodness, theta, steps):
    torch.manual_seed(0)
    layer = HebbianFFLayer(12, 8, neuron="relu", goodness=goodness, theta=theta, scale=0.7)
    x = torch.rand(steps, 6, 12)
    target = torch.tensor([1.0, 1, 1, 0, 0, 0])
    post, _, pre = layer.simulate(x)
    hebbian = layer.update_direction(pre, post, target)
    torch.testing.assert_close(hebbian, -ff_loss_gradient(layer, x, target), rtol=1e-4, atol=1e-6)


def test_one_sample_update_is_an_outer_product_of_its_own_traces_times_the_third_factor():
    layer = HebbianFFLayer(5, 4, neuron="relu", goodness="sum_squares", theta=1.0, scale=2.0)
    x = torch.rand(1, 1, 5)
    post, _, pre = layer.simulate(x)
    target = torch.ones(1)
    p = torch.sigmoid(2.0 * (post.pow(2).sum() - 1.0))
    expected = 2 * 2.0 * (1 - p) * torch.outer(post[0, 0], pre[0, 0])
    torch.testing.assert_close(layer.update_direction(pre, post, target), expected)


def test_symmetric_factor_pushes_the_halves_apart():
    layer = HebbianFFLayer(6, 4, neuron="relu", third_factor="symmetric")
    x = torch.rand(1, 1, 6) + 0.1
    layer.weight.data.abs_()  # every unit active
    post, _, pre = layer.simulate(x)
    dw = layer.update_direction(pre, post, torch.ones(1))  # positive sample: P should grow
    assert (dw[:2] > 0).all() and (dw[2:] < 0).all()
    with pytest.raises(ValueError, match="odd"):
        HebbianFFLayer(6, 5, third_factor="symmetric")


def hebbian_net(**spiking):
    settings = ModelSettings(kind="hebbian", hidden=[16, 8], goodness="mean_squares", theta=1.0)
    return build_model(settings, 20, 4, spiking=SpikingSettings(steps=6, label_code="binary", code_bits=8, **spiking))


def test_each_layers_update_depends_only_on_its_own_traces():
    """Changing the upper layer leaves the lower layer's update unchanged, and vice versa for the
    lower layer's weights only through the spikes it sends up (its output is all the upper layer sees)."""
    torch.manual_seed(0)
    net = hebbian_net(neuron="lif", init_scale=3.0)
    x, y, wrong = torch.rand(5, 20), torch.tensor([0, 1, 2, 3, 0]), torch.tensor([1, 2, 3, 0, 1])
    before = net.layers[0].weight.clone()
    net.layers[1].weight.data.normal_()  # a different upper layer
    other = hebbian_net(neuron="lif", init_scale=3.0)
    other.load_state_dict(net.state_dict())
    other.layers[1].weight.data.zero_()
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    net.local_updates(x, y, wrong, 0.1, gen_a)
    other.local_updates(x, y, wrong, 0.1, gen_b)
    assert not torch.equal(net.layers[0].weight, before)
    torch.testing.assert_close(net.layers[0].weight, other.layers[0].weight)


def test_hebbian_weights_take_no_autograd_gradient():
    net = hebbian_net()
    assert all(not p.requires_grad for p in net.parameters())


def test_binary_label_codes_are_distinct_and_seeded():
    codes = label_codes("binary", 10, 12, seed=3)
    assert codes.shape == (10, 12) and len(torch.unique(codes, dim=0)) == 10
    assert torch.equal(codes, label_codes("binary", 10, 12, seed=3))
    with pytest.raises(ValueError, match="distinct"):
        label_codes("binary", 10, 3)


def test_label_scores_batch_all_candidates_and_predictions_are_reproducible():
    net = hebbian_net(neuron="lif", init_scale=3.0)
    x = torch.rand(7, 20)
    scores = net.label_scores(x)
    assert scores.shape == (7, 4, 2) and ((scores >= 0) & (scores <= 1)).all()
    assert torch.equal(net.predictions(x)["goodness"], net.predictions(x)["goodness"])


@pytest.mark.skipif(not os.environ.get("FFLAB_DATA"), reason="FFLAB_DATA not set (CI points it at ../shared/datasets)")
def test_short_spiking_hebbian_mnist_run_clears_accuracy_bar(tmp_path):
    cfg = load_config(
        os.path.join(REPO, "configs", "mnist-hebbian.toml"),
        ["data.train_subset=5000", "data.test_subset=1000", "train.epochs=1", "train.monitor_size=0"]
        + ["eval.train_accuracy=false"],
    )
    summary = train_run(cfg, tmp_path / "hebb", progress=False, log=lambda s: None)
    assert summary["model"] == "hebbian" and summary["test_accuracy"] >= 0.6  # measured when written: 70.8%
