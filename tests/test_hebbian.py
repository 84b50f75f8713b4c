"""Neo-Hebbian FF: the rule equals FF gradient descent for analog units, it is local, and it learns."""

import pytest
import torch
import torch.nn.functional as F
from product_count import ProductFlops
from repo import config_path

from fflab.config import Config, ConfigError, ModelSettings, SpikingSettings, config_from_dict, load_config
from fflab.families.hebbian import HebbianSettings
from fflab.layers.hebbian import HebbianFFLayer
from fflab.models import build_model
from fflab.spiking import trace
from fflab.supervision import label_codes
from fflab.training.run import train_run


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
    post, _, pre, _ = layer.simulate(x)
    hebbian = layer.update_direction(pre, post, target)
    torch.testing.assert_close(hebbian, -ff_loss_gradient(layer, x, target), rtol=1e-4, atol=1e-6)


def test_one_sample_update_is_an_outer_product_of_its_own_traces_times_the_third_factor():
    layer = HebbianFFLayer(5, 4, neuron="relu", goodness="sum_squares", theta=1.0, scale=2.0)
    x = torch.rand(1, 1, 5)
    post, _, pre, _ = layer.simulate(x)
    target = torch.ones(1)
    p = torch.sigmoid(2.0 * (post.pow(2).sum() - 1.0))
    expected = 2 * 2.0 * (1 - p) * torch.outer(post[0, 0], pre[0, 0])
    torch.testing.assert_close(layer.update_direction(pre, post, target), expected)


def test_symmetric_factor_pushes_the_halves_apart():
    layer = HebbianFFLayer(6, 4, neuron="relu", third_factor="symmetric")
    x = torch.rand(1, 1, 6) + 0.1
    layer.weight.data.abs_()  # every unit active
    post, _, pre, _ = layer.simulate(x)
    dw = layer.update_direction(pre, post, torch.ones(1))  # positive sample: P should grow
    assert (dw[:2] > 0).all() and (dw[2:] < 0).all()
    with pytest.raises(ValueError, match="odd"):
        HebbianFFLayer(6, 5, third_factor="symmetric")
    # from a config, the same refusal is a ConfigError (the CLI prints it without a traceback)
    settings = ModelSettings(kind="hebbian", hidden=[5], goodness="mean_squares", theta=1.0)
    with pytest.raises(ConfigError, match="model .hebbian, 64 inputs, 10 classes.: .*5 is odd"):
        build_model(Config(model=settings, family_settings=HebbianSettings(third_factor="symmetric")), 64, 10)


def test_surrogate_gate_weights_each_steps_postsynaptic_trace_in_the_update():
    """dW = sum_t w_t m (post_t * gate_t) (outer) pre_t, with gate_t the LIF's surrogate derivative at its own
    membrane potential, and the third factor m still from the ungated trace's goodness."""
    torch.manual_seed(0)
    layer = HebbianFFLayer(10, 6, post_gate="surrogate", slope=1.0, theta=0.5)
    x = (torch.rand(5, 3, 10) < 0.5).float()
    post, _, pre, gate = layer.simulate(x)
    target = torch.tensor([1.0, 0.0, 1.0])
    assert gate.shape == post.shape and (gate > 0).all() and (gate <= 1).all()
    mem, expected_gate = torch.zeros(3, 6), []
    for current in x @ layer.weight.t():  # the membrane by hand: beta 0.9, threshold 1, subtractive reset
        mem = 0.9 * mem + current
        expected_gate.append(1 / (1 + (mem - 1).abs()) ** 2)
        mem = mem - (mem > 1).float()
    torch.testing.assert_close(gate, torch.stack(expected_gate))
    m = layer.third_factor_per_unit(post, target)
    expected = torch.einsum("tnh,nh,tnd->hd", post * gate, m, pre) / (5 * 3)
    torch.testing.assert_close(layer.update_direction(pre, post, target, gate), expected)
    assert layer.simulate(x, learning=False)[3] is None  # scoring needs no gate
    assert HebbianFFLayer(10, 6).simulate(x)[3] is None  # the paper's rule: no gate
    with pytest.raises(ValueError, match="post_gate"):
        HebbianFFLayer(10, 6, post_gate="sometimes")
    analog_gated = {"neuron": "relu", "post_gate": "surrogate"}
    with pytest.raises(ConfigError, match="post_gate"):
        config_from_dict({"model": {"kind": "hebbian"}, "hebbian": analog_gated, "eval": {"predict": "goodness"}})


def hebbian_net(encoder="rate", **hebbian):
    settings = ModelSettings(kind="hebbian", hidden=[16, 8], goodness="mean_squares", theta=1.0)
    cfg = Config(
        model=settings,
        spiking=SpikingSettings(steps=6, encoder=encoder),
        family_settings=HebbianSettings(label_code="binary", code_bits=8, **hebbian),
    )
    return build_model(cfg, 20, 4)


def test_each_layers_update_is_built_from_its_own_traces_and_third_factor_only():
    """Layer 1's weight change is sum_t w_t m (outer) post_t, pre_t of its own traces, whatever layer 0's
    weights are (layer 0 reaches it only through the spikes it sends up); layer 0 never sees layer 1."""
    torch.manual_seed(0)
    net = hebbian_net(neuron="lif", init_scale=3.0)
    x, y, wrong = torch.rand(5, 20), torch.tensor([0, 1, 2, 3, 0]), torch.tensor([1, 2, 3, 0, 1])
    train = net.input_train(torch.cat([x, x]), torch.cat([y, wrong]), torch.Generator().manual_seed(3))
    (pre0, post0), (pre1, post1) = net.simulate(train, learning=True)
    spikes0 = net.layers[0].simulate(train)[1]
    torch.testing.assert_close(pre1, trace(spikes0, "leaky", 0.9))  # its presynaptic trace: layer 0's spikes
    target = torch.cat([torch.ones(5), torch.zeros(5)])
    layer = net.layers[1]
    p = layer.probability(post1)
    m = layer.scale * 2 / layer.out_features * (target - p)  # mean-square goodness, sigmoid factor
    expected = torch.einsum("n,tnh,tnd->hd", m, post1, pre1) / (post1.shape[0] * 10)
    torch.testing.assert_close(layer.update_direction(pre1, post1, target), expected)

    before = net.layers[0].weight.clone()
    other = hebbian_net(neuron="lif", init_scale=3.0)
    other.load_state_dict(net.state_dict())
    other.layers[1].weight.data.zero_()  # a different upper layer
    net.local_updates(x, y, wrong, 0.1, torch.Generator().manual_seed(3))
    other.local_updates(x, y, wrong, 0.1, torch.Generator().manual_seed(3))
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


def test_batched_label_scores_equal_one_run_per_label_and_do_not_depend_on_batching():
    net = hebbian_net(neuron="lif", init_scale=3.0, encoder="direct")  # no randomness: runs are comparable
    x = torch.rand(7, 20)
    scores = net.label_scores(x)
    assert scores.shape == (7, 4, 2)
    for i in (0, 6):
        for c in range(4):
            sims = net.simulate(net.input_train(x[i : i + 1], torch.tensor([c]), None))
            single = [layer.probability(post)[0] for layer, (_, post) in zip(net.layers, sims, strict=True)]
            torch.testing.assert_close(scores[i, c], torch.stack(single))
    by_batch = [net.predictions(x, batch_size=b)["goodness"] for b in (2, 3, 7)]
    assert all(torch.equal(p, by_batch[0]) for p in by_batch)
    # A rate code draws its spikes from one seeded stream per set, so it is reproducible rather than batch-free.
    rate = hebbian_net(neuron="lif", init_scale=3.0)
    assert torch.equal(rate.predictions(x, batch_size=3)["goodness"], rate.predictions(x, batch_size=3)["goodness"])


def test_eligibility_decay_weighs_recent_steps_more_and_top_k_limits_the_update():
    layer = HebbianFFLayer(6, 4, neuron="relu", goodness="sum_squares", eligibility_decay=0.5)
    layer.weight.data.abs_()
    x = torch.zeros(3, 1, 6)
    x[0, 0, 0] = 1.0  # an early input on synapse 0
    x[2, 0, 1] = 1.0  # a late input on synapse 1
    post, _, pre, _ = layer.simulate(x)
    dw = layer.update_direction(pre, post, torch.ones(1))
    early, late = dw[:, 0] / post[0, 0], dw[:, 1] / post[2, 0]
    torch.testing.assert_close(early, 0.25 * late)  # decay^2 for the step two before the end
    layer.top_k = 1
    assert (layer.update_direction(pre, post, torch.ones(1)).abs().sum(1) > 0).sum() == 1


@pytest.mark.slow
@pytest.mark.real_data("mnist")
def test_short_spiking_hebbian_mnist_run_clears_accuracy_bar(tmp_path):
    cfg = load_config(
        config_path("mnist-hebbian"),
        ["data.train_subset=5000", "data.test_subset=1000", "train.epochs=1", "train.monitor_size=0"]
        + ["eval.train_accuracy=false"],
    )
    summary = train_run(cfg, tmp_path / "hebb", progress=False, log=lambda s: None)
    assert summary["model"] == "hebbian" and summary["test_accuracy"] >= 0.6  # measured when written: 70.8%


def test_hard_negatives_for_hebbian_networks_are_wrong_labels_ranked_by_the_model():
    from fflab.config import TrainSettings
    from fflab.training.trainer import HebbianTrainer

    net = hebbian_net(neuron="lif", init_scale=3.0, encoder="direct")
    x, y = torch.rand(30, 20), torch.randint(0, 4, (30,))
    trainer = HebbianTrainer(net, TrainSettings(negatives="hardest"), progress=False)
    wrong = trainer.wrong_labels(x, y)
    assert (wrong != y).all()
    scores = net.label_scores(x).sum(2)
    scores[torch.arange(30), y] = -float("inf")
    assert torch.equal(wrong, scores.argmax(1))  # the wrong label with the highest P


@pytest.mark.parametrize(
    ("config", "overrides"),
    [
        ("mnist-hebbian", ["model.hidden=[30,20]"]),  # spiking, plasticity over the presentation, leaky traces
        ("mnist-hebbian", ["model.hidden=[30]", "train.negatives=hard"]),  # a run per candidate label
        ("reference/hebbian-ffa-online", ["model.hidden=[30]"]),  # online plasticity at the late steps, rest steps
        ("reference/hebbian-ffa-analog", ["model.hidden=[30]"]),
    ],
)
def test_flops_per_sample_counts_the_products_a_training_step_runs(config, overrides):
    """The count behind samples/s' GFLOP/s, against the products one training step really runs."""
    from fflab.training.trainer import make_trainer

    cfg = load_config(config_path(config), ["train.batch_size=4", *overrides])
    net = build_model(cfg, 784, 10, input_shape=(1, 28, 28))
    trainer = make_trainer(net, cfg, progress=False, image_shape=(1, 28, 28))
    x, y = torch.rand(4, 784), torch.tensor([0, 1, 2, 3])
    with ProductFlops() as counted:
        trainer.step(x, y, torch.arange(4))
    assert trainer.flops_per_sample() * len(x) == counted.flops
