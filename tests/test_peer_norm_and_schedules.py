"""Peer normalisation, per-layer thresholds, learning-rate schedules, greedy training, refreshed negatives."""

import pytest
import torch
from product_count import ProductFlops
from toydata import toy_data

from fflab.config import Config, ConfigError, ModelSettings, TrainSettings, config_from_dict
from fflab.layers import FFDense
from fflab.models import build_model
from fflab.training.trainer import FFTrainer, lr_factor, make_trainer


def test_peer_normalization_matches_hand_computation_and_updates_running_mean():
    layer = FFDense(3, 2, peer_weight=0.5, peer_momentum=0.9, loss="symba")
    h_pos = torch.tensor([[1.0, 0.0], [3.0, 0.0]], requires_grad=True)
    # running = 0.5 * 0.9 + mean_activity * 0.1 = [0.45 + 0.2, 0.45 + 0.0] = [0.65, 0.45]; layer mean 0.55
    loss = layer.peer_normalization_loss(h_pos)
    assert torch.allclose(layer.peer_mean, torch.tensor([0.65, 0.45]))
    loss.backward()
    # Hinton's code: each positive sample's unit j gets (running_j - mean running) / N, N = 2.
    assert torch.allclose(h_pos.grad, torch.tensor([[0.05, -0.05], [0.05, -0.05]]))


def test_peer_gradient_is_scaled_like_mean_of_squares_goodness():
    h_pos = torch.tensor([[1.0, 0.0], [3.0, 0.0]], requires_grad=True)
    FFDense(3, 2, peer_weight=0.5, goodness="mean_squares").peer_normalization_loss(h_pos).backward()
    # As the hand computation above, divided by the 2 units that the goodness averages over.
    assert torch.allclose(h_pos.grad, torch.tensor([[0.025, -0.025], [0.025, -0.025]]))


def test_peer_normalization_raises_a_quiet_unit_and_leaves_silent_ones_alone():
    torch.manual_seed(0)
    x = torch.rand(6, 5)
    layer = FFDense(5, 3, peer_weight=1.0)
    with torch.no_grad():
        layer.linear.weight.zero_()
        layer.linear.bias.copy_(torch.tensor([0.1, 2.0, -1.0]))  # quiet, busy, silent on every input
    layer.peer_normalization_loss(layer(x)).backward()
    grad = layer.linear.bias.grad
    assert grad[0] < 0 < grad[1], "descent raises the quiet unit and lowers the busy one"
    assert grad[2] == 0, "a silent ReLU unit passes no gradient, the peer term's included"


def test_peer_normalization_pushes_an_always_on_unit_down():
    torch.manual_seed(0)
    layer = FFDense(4, 3, peer_weight=1.0)
    h = torch.tensor([[5.0, 0.1, 0.1]], requires_grad=True)
    layer.peer_normalization_loss(h).backward()
    assert h.grad[0, 0] > 0 and h.grad[0, 1] < 0  # descent lowers the dominant unit, raises the quiet ones


def test_peer_loss_only_counts_in_training_mode():
    torch.manual_seed(0)
    layer = FFDense(6, 4, peer_weight=10.0)
    x = torch.rand(8, 6)
    h = layer(x)
    train_loss = layer.local_loss(h, 4)[0]
    layer.eval()
    before = layer.peer_mean.clone()
    eval_loss = layer.local_loss(h, 4)[0]
    assert torch.equal(layer.peer_mean, before), "evaluation must not move the running means"
    assert train_loss.item() != eval_loss.item()


def test_per_layer_thresholds():
    net = build_model(Config(model=ModelSettings(hidden=[8, 8, 8], theta=[1.0, 2.0, 3.0], loss="softplus")), 20, 4)
    assert [layer.theta for layer in net.layers] == [1.0, 2.0, 3.0]


def test_lr_schedules():
    assert [lr_factor("hinton", p) for p in (0.0, 0.25, 0.5, 0.75)] == [1.0, 1.0, 1.0, 0.5]
    assert lr_factor("linear", 0.25) == 0.75
    assert lr_factor("cosine", 0.5) == pytest.approx(0.5)
    assert lr_factor("none", 0.9) == 1.0


@pytest.mark.slow
def test_greedy_schedule_trains_one_layer_at_a_time():
    x, y = toy_data(300)
    torch.manual_seed(0)
    net = build_model(Config(model=ModelSettings(hidden=[16, 16, 16], label="concat")), 20, 4)
    trainer = FFTrainer(net, TrainSettings(epochs=2, batch_size=50, schedule="greedy"), progress=False)
    snapshots = []

    def on_epoch(stats):
        snapshots.append((stats.loss, [layer.linear.weight.clone() for layer in net.layers]))

    history = trainer.fit(x, y, on_epoch)
    assert len(history) == 6  # 3 layers x 2 epochs
    for e, (loss, _) in enumerate(snapshots):
        assert [v is not None for v in loss] == [j == e // 2 for j in range(3)]
    # While layer k trains, every other layer stays exactly as it was.
    for e in range(1, 6):
        k = e // 2
        for j in range(3):
            same = torch.equal(snapshots[e][1][j], snapshots[e - 1][1][j])
            assert same == (j != k), (e, j)


def test_refreshed_negatives_come_from_a_bank_of_model_scores():
    x, y = toy_data(300)
    torch.manual_seed(0)
    net = build_model(Config(model=ModelSettings(hidden=[16, 16], label="concat")), 20, 4)
    settings = TrainSettings(epochs=3, batch_size=50, negatives="hard", hard_scores="refreshed", refresh_every=2)
    trainer = FFTrainer(net, settings, progress=False)
    banks, fresh = [], []
    original = trainer.start_epoch

    def spy(xx, yy, epoch):
        original(xx, yy, epoch)
        banks.append(trainer.score_bank.clone())
        net.eval()
        fresh.append(net.hard_negative_scorer("prediction")(xx))
        net.train()

    trainer.start_epoch = spy
    trainer.fit(x, y)
    assert banks[0].shape == (300, 4)
    # Refreshed at epochs 1 and 3 (refresh_every=2): then the bank is exactly the model's current scores.
    assert torch.allclose(banks[0], fresh[0], atol=1e-5) and torch.allclose(banks[2], fresh[2], atol=1e-5)
    assert torch.equal(banks[0], banks[1]) and not torch.allclose(banks[1], fresh[1], atol=1e-5)
    both = trainer.make_pairs(x[:10], y[:10], idx=torch.arange(10))
    assert not torch.any(both[10:, 20:].argmax(1) == y[:10])


def test_online_readout_negatives_learn_with_the_ff_layers_and_follow_the_readout_belief():
    x, y = toy_data(300)
    cfg = config_from_dict(
        {
            "model": {"hidden": [16, 16], "label": "concat"},
            "train": {"epochs": 2, "batch_size": 50, "negatives": "hardest", "hard_scores": "readout"},
            "readout": {"enabled": True, "lr": 0.01},
        }
    )
    torch.manual_seed(0)
    net = build_model(cfg, 20, 4)
    trainer = make_trainer(net, cfg, progress=False)
    trainer.fit(x, y)
    assert net.readout.linear.weight.abs().sum() > 0, "the readout must learn during FF training"
    # Outside training the scores are the readout's logits on neutral-label features, and do not train it.
    weights = net.readout.linear.weight.clone()
    both = trainer.make_pairs(x[:40], y[:40])
    assert torch.equal(net.readout.linear.weight, weights)
    logits = net.readout(net.readout_features(x[:40]))
    believed = logits.scatter(1, y[:40].unsqueeze(1), float("-inf")).argmax(1)
    assert torch.equal(both[40:, 20:].argmax(1), believed)  # hardest: the most believed wrong label
    assert not torch.any(believed == y[:40])


def test_online_readout_negatives_need_a_readout_and_a_model_that_has_one():
    with pytest.raises(ConfigError, match="readout.enabled"):
        config_from_dict({"train": {"negatives": "hard", "hard_scores": "readout"}})
    with pytest.raises(ConfigError, match="'hebbian' has no online readout"):
        config_from_dict(
            {
                "model": {"kind": "hebbian"},
                "train": {"negatives": "hard", "hard_scores": "readout"},
                "readout": {"enabled": True},
            }
        )


def test_layer_epochs_freeze_each_layer_after_its_window():
    x, y = toy_data(300)
    torch.manual_seed(0)
    net = build_model(Config(model=ModelSettings(hidden=[16, 16, 16], label="concat")), 20, 4)
    trainer = FFTrainer(net, TrainSettings(epochs=3, batch_size=50, layer_epochs=[1, 3, 2]), progress=False)
    snapshots = [[layer.linear.weight.clone() for layer in net.layers]]
    losses = []

    def on_epoch(stats):
        losses.append(stats.loss)
        snapshots.append([layer.linear.weight.clone() for layer in net.layers])

    trainer.fit(x, y, on_epoch)
    for e in range(1, 4):
        learning = [e <= last for last in (1, 3, 2)]
        assert [v is not None for v in losses[e - 1]] == learning
        changed = [not torch.equal(snapshots[e][j], snapshots[e - 1][j]) for j in range(3)]
        assert changed == learning, (e, changed)
    assert trainer.trained_layers == [0, 1, 2], "after training no layer is left frozen"


def test_layer_epochs_count_the_flops_of_each_epoch():
    net = build_model(Config(model=ModelSettings(hidden=[16, 16], label="concat")), 20, 4)
    forward = [layer.forward_flops() for layer in net.layers]
    trainer = FFTrainer(net, TrainSettings(epochs=2, layer_epochs=[1, 2]), progress=False)
    # Epoch 1 trains both layers (2 rows: positive and negative); epoch 2 runs layer 0 frozen under layer 1.
    both, top_only = 2 * 2 * sum(forward), 2 * forward[0] + 2 * 2 * forward[1]
    assert trainer.flops_per_sample() == (both + top_only) // 2


@pytest.mark.parametrize(
    ("model", "train", "message"),
    [
        ({"hidden": [8, 8]}, {"epochs": 3, "layer_epochs": [3]}, "one epoch count per layer"),
        ({"hidden": [8, 8]}, {"epochs": 3, "layer_epochs": [0, 3]}, "each in 1..train.epochs"),
        ({"hidden": [8, 8]}, {"epochs": 3, "layer_epochs": [1, 2]}, "make the largest entry equal train.epochs"),
        ({"hidden": [8, 8]}, {"epochs": 3, "layer_epochs": [1, 3], "schedule": "greedy"}, "simultaneous"),
        ({"kind": "backprop", "hidden": [8, 8]}, {"epochs": 3, "layer_epochs": [1, 3]}, "feed-forward FF"),
    ],
)
def test_layer_epochs_config_errors_name_the_problem(model, train, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"model": model, "train": train})


@pytest.mark.parametrize(
    ("train", "model", "readout"),
    [
        ({"negatives": "random"}, {}, False),
        ({"negatives": "hard", "hard_scores": "first_layer"}, {}, False),  # the first layer's product shared
        ({"negatives": "hard", "hard_scores": "first_layer"}, {"label": "concat"}, False),
        ({"negatives": "hard", "hard_scores": "prediction"}, {"hidden": [16, 12, 8], "predict_layers": [1, 2]}, False),
        ({"negatives": "hard", "hard_scores": "readout"}, {}, True),
        ({"negatives": "random", "layer_order": "in_turn"}, {"hidden": [16, 12, 8]}, False),
    ],
)
def test_flops_per_sample_counts_the_products_a_training_step_runs(train, model, readout):
    """The count behind samples/s' GFLOP/s and the share of the matmul peak, against torch's own count of one step."""
    x, y = toy_data(40, 20, 4)
    cfg = config_from_dict(
        {
            "model": {"hidden": [16, 12], **model},
            "train": {"batch_size": 40, **train},
            "readout": {"enabled": readout},
        }
    )
    trainer = make_trainer(build_model(cfg, 20, 4), cfg, progress=False)
    with ProductFlops() as counted:
        trainer.step(x, y, torch.arange(len(x)))  # a training step: the readout, if it scores, learns too
    assert trainer.flops_per_sample() * len(x) == counted.flops
