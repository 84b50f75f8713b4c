"""Linear readout on frozen FF layers, and the backprop baseline of the same layers."""

import torch
from toydata import toy_data

from fflab.config import ModelSettings, ReadoutSettings, TrainSettings
from fflab.models import BackpropNetwork, build_model
from fflab.training.evaluate import evaluate
from fflab.training.readout import train_readout
from fflab.training.trainer import BackpropTrainer, FFTrainer, make_trainer


def test_readout_learns_without_touching_the_ff_layers():
    x, y = toy_data()
    torch.manual_seed(0)
    net = build_model(ModelSettings(hidden=[32, 32], label="concat"), 20, 4, ReadoutSettings(enabled=True, epochs=5))
    FFTrainer(net, TrainSettings(epochs=3, batch_size=50, lr=3e-3), progress=False).fit(x, y)
    frozen = {k: v.clone() for k, v in net.layers.state_dict().items()}
    history = train_readout(net, x, y, ReadoutSettings(enabled=True, epochs=5, lr=1e-2))
    assert all(torch.equal(v, net.layers.state_dict()[k]) for k, v in frozen.items())
    assert history[-1]["loss"] < history[0]["loss"]
    result = evaluate(net, x, y, primary="readout")
    assert set(result["accuracy_by_method"]) == {"goodness", "readout"}
    assert result["accuracy"] == result["accuracy_by_method"]["readout"] > 0.9


def test_readout_features_use_a_neutral_label_and_the_chosen_layers():
    torch.manual_seed(0)
    net = build_model(
        ModelSettings(hidden=[8, 6, 5], label="overlay"), 20, 4, ReadoutSettings(enabled=True, layers=[0, 2])
    )
    x = torch.rand(3, 20)
    feats = net.readout_features(x)
    assert feats.shape == (3, 8 + 5)
    acts = net.activities(net.embedding.neutral(x))
    assert torch.allclose(feats[:, :8].pow(2).mean(1), torch.ones(3), atol=1e-4)  # unit RMS directions
    assert torch.allclose(feats[:, 8:], acts[2] / acts[2].pow(2).mean(1, keepdim=True).sqrt(), atol=1e-4)


def test_backprop_gradients_cross_layers_where_ff_gradients_do_not():
    torch.manual_seed(0)
    bp = build_model(ModelSettings(kind="backprop", hidden=[8, 8]), 20, 4)
    assert isinstance(bp, BackpropNetwork)
    loss = torch.nn.functional.cross_entropy(bp(torch.rand(5, 20)), torch.randint(0, 4, (5,)))
    grads = torch.autograd.grad(loss, [layer.linear.weight for layer in bp.layers])
    assert all(g.abs().sum() > 0 for g in grads)


def test_backprop_baseline_trains_through_the_shared_loop():
    x, y = toy_data()
    torch.manual_seed(0)
    bp = build_model(ModelSettings(kind="backprop", hidden=[32, 32]), 20, 4)
    trainer = make_trainer(bp, TrainSettings(epochs=3, batch_size=50, lr=3e-3), progress=False)
    assert isinstance(trainer, BackpropTrainer)
    history = trainer.fit(x, y)
    assert history[-1].loss[0] < history[0].loss[0]
    assert evaluate(bp, x, y)["accuracy_by_method"] == {"backprop": evaluate(bp, x, y)["accuracy"]}
    assert evaluate(bp, x, y)["accuracy"] > 0.9
    dense = 2 * (20 * 32 + 32 * 32) + 2 * 32 * 4
    assert trainer.flops_per_sample() == 3 * dense - 2 * 20 * 32
