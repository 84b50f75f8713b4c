"""Linear readout on frozen FF layers, and the backprop baseline of the same layers."""

import pytest
import torch
from toydata import toy_data

from fflab.checkpoint import load_checkpoint, save_checkpoint
from fflab.config import Config, ModelSettings, ReadoutSettings, TrainSettings, config_from_dict
from fflab.models import BackpropNetwork, build_model
from fflab.models.readout import LinearReadout
from fflab.training.evaluate import evaluate
from fflab.training.readout import train_readout
from fflab.training.trainer import BackpropTrainer, FFTrainer, make_trainer


@pytest.mark.slow
def test_readout_learns_without_touching_the_ff_layers():
    x, y = toy_data()
    torch.manual_seed(0)
    net = build_model(
        Config(model=ModelSettings(hidden=[32, 32], label="concat"), readout=ReadoutSettings(enabled=True, epochs=5)),
        20,
        4,
    )
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
        Config(
            model=ModelSettings(hidden=[8, 6, 5], label="overlay"), readout=ReadoutSettings(enabled=True, layers=[0, 2])
        ),
        20,
        4,
    )
    x = torch.rand(3, 20)
    feats = net.readout_features(x)
    assert feats.shape == (3, 8 + 5)
    acts = net.activities(net.embedding.neutral(x))
    assert torch.allclose(feats[:, :8].pow(2).mean(1), torch.ones(3), atol=1e-4)  # unit RMS directions
    assert torch.allclose(feats[:, 8:], acts[2] / acts[2].pow(2).mean(1, keepdim=True).sqrt(), atol=1e-4)


def test_standardization_centres_and_scales_each_feature_and_ignores_constant_ones():
    head = LinearReadout(3, 2, [0], standardize=True)
    features = torch.stack([torch.randn(500) * 100 + 7, torch.randn(500) * 1e-3, torch.full((500,), 4.0)], 1)
    head.fit_standardization(features)
    z = (features - head.mean) * head.inv_std
    assert torch.allclose(z[:, :2].mean(0), torch.zeros(2), atol=1e-4)
    assert torch.allclose(z[:, :2].std(0), torch.ones(2), atol=1e-4)
    assert head.inv_std[2] == 0  # constant in training: a different value at test time cannot blow up the logits
    with torch.no_grad():
        head.linear.weight.normal_()
    moved = features.clone()
    moved[:, 2] = 1e6
    assert torch.equal(head(moved), head(features))


def test_a_recurrent_runs_readout_is_refit_on_frozen_standardized_features_and_survives_a_checkpoint(tmp_path):
    x, y = toy_data()
    cfg = config_from_dict(
        {
            "model": {"kind": "recurrent", "hidden": [16, 16]},
            "recurrent": {"steps": 4, "window": [2, 4]},
            "train": {"epochs": 1, "batch_size": 50, "negatives": "hard", "hard_scores": "readout"},
            "readout": {"enabled": True, "standardize": True, "epochs": 3, "lr": 0.01},
        }
    )
    torch.manual_seed(0)
    net = build_model(cfg, 20, 4)
    make_trainer(net, cfg, progress=False).fit(x, y)
    frozen = {k: v.clone() for k, v in net.layers.state_dict().items()}
    history = train_readout(net, x, y, cfg.readout)
    assert all(torch.equal(v, net.layers.state_dict()[k]) for k, v in frozen.items())
    assert history[-1]["loss"] < history[0]["loss"]
    features = torch.cat([net.readout_features(x[i : i + 100]) for i in range(0, len(x), 100)])
    assert torch.allclose(net.readout.mean, features.mean(0), atol=1e-5)
    save_checkpoint(tmp_path, net, cfg, input_dim=20, num_classes=4)
    loaded, _, _ = load_checkpoint(tmp_path)
    assert torch.equal(loaded.readout.inv_std, net.readout.inv_std)
    assert torch.equal(loaded.predictions(x[:50])["readout"], net.predictions(x[:50])["readout"])


def test_backprop_gradients_cross_layers():
    torch.manual_seed(0)
    bp = build_model(Config(model=ModelSettings(kind="backprop", hidden=[8, 8])), 20, 4)
    assert isinstance(bp, BackpropNetwork)
    loss = torch.nn.functional.cross_entropy(bp(torch.rand(5, 20)), torch.randint(0, 4, (5,)))
    grads = torch.autograd.grad(loss, [layer.linear.weight for layer in bp.layers])
    assert all(g.abs().sum() > 0 for g in grads)


def test_backprop_baseline_trains_through_the_shared_loop():
    x, y = toy_data()
    torch.manual_seed(0)
    bp = build_model(Config(model=ModelSettings(kind="backprop", hidden=[32, 32])), 20, 4)
    trainer = make_trainer(bp, Config(train=TrainSettings(epochs=3, batch_size=50, lr=3e-3)), progress=False)
    assert isinstance(trainer, BackpropTrainer)
    history = trainer.fit(x, y)
    assert history[-1].loss[0] < history[0].loss[0]
    assert evaluate(bp, x, y)["accuracy_by_method"] == {"backprop": evaluate(bp, x, y)["accuracy"]}
    assert evaluate(bp, x, y)["accuracy"] > 0.9
    dense = 2 * (20 * 32 + 32 * 32) + 2 * 32 * 4
    assert trainer.flops_per_sample() == 3 * dense - 2 * 20 * 32
