"""FF network: learning is local, every layer learns on every batch, prediction is per image."""

import pytest
import torch

from fflab.config import Config, ModelSettings, TrainSettings
from fflab.models import build_model, predict_from_scores
from fflab.models.stacks import per_layer
from fflab.training.trainer import FFTrainer


def small_net(**kw):
    torch.manual_seed(0)
    return build_model(Config(model=ModelSettings(hidden=[16, 12, 8], **kw)), input_dim=30, num_classes=5)


def test_no_gradient_crosses_layers():
    net = small_net()
    x = torch.rand(8, 35 - 5)
    both = net.embedding.embed(torch.cat([x, x]), torch.randint(0, 5, (16,)))
    results = net.local_losses(both, n_pos=8)
    for k, r in enumerate(results):
        for j, layer in enumerate(net.layers):
            grads = torch.autograd.grad(r.loss, list(layer.parameters()), retain_graph=True, allow_unused=True)
            if j == k:
                assert all(g is not None and g.abs().sum() > 0 for g in grads), f"layer {k} must learn from its loss"
            else:
                assert all(g is None for g in grads), f"loss of layer {k} reached layer {j}"


def test_trainer_step_updates_each_layer_from_its_own_loss_only():
    net = small_net()
    trainer = FFTrainer(net, TrainSettings(batch_size=8, optimizer="sgd", lr=0.1, momentum=0.0))
    x, y = torch.rand(8, 30), torch.randint(0, 5, (8,))
    before = [layer.linear.weight.detach().clone() for layer in net.layers]
    # The gradient each layer should get: its own loss on the same batch of pairs.
    gen_state = trainer.generator.get_state()
    both = trainer.pairs.make(x, y, torch.Generator().set_state(gen_state))
    expected = []
    for k, r in enumerate(net.local_losses(both, n_pos=8)):
        (g,) = torch.autograd.grad(r.loss, [net.layers[k].linear.weight])
        expected.append(g)
    trainer.step(x, y)
    for k, layer in enumerate(net.layers):
        assert torch.allclose(layer.linear.weight, before[k] - 0.1 * expected[k], atol=1e-6)


def test_prediction_scores_every_candidate_for_every_image():
    net = small_net()
    x = torch.rand(7, 30)
    scores = net.label_scores(x)
    assert scores.shape == (7, 5, 3)
    for c in range(5):
        acts = net.activities(net.embedding.embed(x, torch.full((7,), c)))
        for j, (layer, h) in enumerate(zip(net.layers, acts, strict=True)):
            assert torch.allclose(scores[:, c, j], layer.goodness(h), rtol=1e-4, atol=1e-5)
    # One label per image, not one per batch.
    assert net.predict(x).shape == (7,)


def test_inverted_objective_predicts_lowest_goodness():
    net = small_net(objective="inverted")
    x = torch.rand(9, 30)
    scores = net.label_scores(x)
    raw = torch.stack(
        [
            torch.stack(
                [
                    layer.goodness(h)
                    for layer, h in zip(
                        net.layers, net.activities(net.embedding.embed(x, torch.full((9,), c))), strict=True
                    )
                ],
                1,
            )
            for c in range(5)
        ],
        1,
    )
    assert torch.allclose(scores, -raw, rtol=1e-4, atol=1e-5)
    assert torch.equal(net.predict(x), raw[:, :, 1:].sum(2).argmin(1))


def test_default_prediction_skips_the_first_layer():
    assert small_net().predict_layers == [1, 2]
    assert build_model(Config(model=ModelSettings(hidden=[8])), 30, 5).predict_layers == [0]
    assert small_net(predict_layers=[0, 2]).predict_layers == [0, 2]


def test_predict_from_scores_sums_chosen_layers():
    scores = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # one image, two labels, two layers
    assert predict_from_scores(scores, [0]).item() == 0
    assert predict_from_scores(scores, [1]).item() == 1
    assert predict_from_scores(scores, [0, 1]).item() == 1


def test_forward_flops_counts_dense_products():
    net = small_net()
    assert net.forward_flops() == 2 * (30 * 16 + 16 * 12 + 12 * 8)


@pytest.mark.slow
@pytest.mark.parametrize("label", ["overlay", "concat"])
def test_training_reduces_the_local_losses(label):
    torch.manual_seed(0)
    net = build_model(Config(model=ModelSettings(hidden=[32, 32], label=label)), input_dim=30, num_classes=5)
    trainer = FFTrainer(net, TrainSettings(batch_size=50, lr=1e-2), progress=False)
    # Five well-separated classes.
    centers = torch.rand(5, 30)
    y = torch.randint(0, 5, (500,))
    x = centers[y] + 0.05 * torch.randn(500, 30)
    first = trainer.train_epoch(x, y, 1).loss
    for epoch in range(2, 21):
        last = trainer.train_epoch(x, y, epoch).loss
    assert all(b < a for a, b in zip(first, last, strict=True))
    assert (net.predict(x) == y).float().mean() > 0.9


def test_per_layer_settings_repeat_one_value_and_refuse_a_wrong_count():
    assert per_layer(3, 2) == [3, 3] and per_layer([5], 3) == [5, 5, 5] and per_layer([1, 2], 2) == [1, 2]
    with pytest.raises(ValueError, match=r"one per layer \(3\), got \[1, 2\]"):
        per_layer([1, 2], 3)


def test_an_epoch_logging_to_a_file_says_now_and_then_how_far_it_is(capsys):
    """Away from a terminal (pytest's captured stderr) the bar is off; a long epoch prints progress lines instead."""
    net = build_model(Config(model=ModelSettings(hidden=[8])), input_dim=30, num_classes=5)
    x, y = torch.rand(100, 30), torch.randint(0, 5, (100,))
    trainer = FFTrainer(net, TrainSettings(batch_size=25), progress=True)
    trainer.train_epoch(x, y, 1)  # an epoch shorter than the 5 minutes between lines prints none
    assert capsys.readouterr().err == ""
    trainer.heartbeat_seconds = 0.0  # every batch "takes long": a line after each but the last
    trainer.train_epoch(x, y, 2)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" after ")[0] for line in lines] == [
        f"epoch 2/{trainer.settings.epochs}: {k}/4 batches" for k in (1, 2, 3)
    ]
    assert all(line.endswith(" min left") for line in lines)
    quiet = FFTrainer(net, TrainSettings(batch_size=25), progress=False)
    quiet.heartbeat_seconds = 0.0
    quiet.train_epoch(x, y, 1)  # progress off: silent
    assert capsys.readouterr().err == ""
