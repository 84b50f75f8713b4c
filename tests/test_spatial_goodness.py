"""Spatial-goodness learners (model.kind = "spatial-goodness", fflab.layers.spatial_goodness), after ASGE's paper:
the goodness encoding and loss against the paper's formula on a hand example, RMS pooling and the channel layer norm,
locality, the patch rule, configs/cifar10-spatial-goodness.toml as built, and a short run that learns.

The original's code (github.com/KAI-Laboratory/ASGE) could not be read here, so the rule is transcribed from the
paper's text (arXiv 2509.12394): g[c, i, j] = the squares of channel c's activity in patch (i, j) of a P x P grid,
a = W g + b with W, b fixed at random, loss = cross-entropy(a, y). See docs/notes/2026-12-asge.md.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from repo import REPO

from fflab.checkpoint import load_checkpoint
from fflab.config import config_from_dict, load_config
from fflab.data import load_dataset
from fflab.errors import ConfigError
from fflab.families import family_of
from fflab.families.spatial_goodness import patch_counts
from fflab.layers.conv import channel_layer_norm, rms_pool2d
from fflab.layers.spatial_goodness import SpatialGoodnessConv2d, patch_goodness
from fflab.models import build_model
from fflab.training.evaluate import evaluate
from fflab.training.run import train_run
from fflab.training.trainer import make_trainer

PRESET = REPO / "configs" / "cifar10-spatial-goodness.toml"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_config(model: dict | None = None, table: dict | None = None, **sections):
    """Three spatial-goodness learners of widths that are no multiple of the 4 classes, RMS-pooled, for 1x8x8 images."""
    return config_from_dict(
        {
            "model": {
                "kind": "spatial-goodness",
                "architecture": "conv",
                "hidden": [6, 9, 12],
                "pool": [2, 1, 2],
                "pool_mode": "rms",
                "input_norm": "none",
                "loss": "competitive",
                "alpha": 1.0,
                "label": "none",
                **(model or {}),
            },
            "spatial_goodness": table or {},
            "train": {"negatives": "none", "batch_size": 16, "lr": 0.01, **sections.pop("train", {})},
            **sections,
        }
    )


def test_goodness_scores_and_loss_match_the_formula_by_hand():
    """One learner's score and loss by hand on a 2-channel 4x4 map with 2x2 patches: each patch's mean square, the
    fixed affine map, the cross-entropy."""
    torch.manual_seed(0)
    layer = SpatialGoodnessConv2d((1, 4, 4), 2, patches=2, loss="competitive", num_classes=3, alpha=1.0)
    h = torch.tensor(
        [
            [
                [[1.0, 2.0, 0.0, 0.0], [3.0, 0.0, 0.0, 1.0], [0.0, 0.0, 2.0, 2.0], [0.0, 4.0, 2.0, 2.0]],
                [[0.5, 0.5, 1.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0]],
            ]
        ]
    )
    # channel 0: patches (1+4+9+0)/4, (0+0+0+1)/4, (0+0+0+16)/4, (4+4+4+4)/4; channel 1: 1/4, 1/4, 0, 9/4
    g = torch.tensor([[14 / 4, 1 / 4, 16 / 4, 16 / 4, 1 / 4, 1 / 4, 0.0, 9 / 4]])
    assert torch.allclose(layer.spatial_goodness(h), g)
    w, b = layer.projection, layer.projection_bias
    a = torch.tensor([[sum(w[k, j].item() * g[0, j].item() for j in range(8)) + b[k].item() for k in range(3)]])
    assert torch.allclose(layer.class_goodness(h), a, atol=1e-6)
    y = torch.tensor([2])
    by_hand = -a[0, 2].item() + math.log(sum(math.exp(v) for v in a[0].tolist()))
    loss, _ = layer.local_loss(h, 1, y)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)


def test_the_fixed_map_is_drawn_once_saved_and_never_trained():
    torch.manual_seed(3)
    cfg = small_config()
    model = build_model(cfg, 64, 4, input_shape=(1, 8, 8))
    layer = model.layers[0]
    assert layer.projection.shape == (4, layer.out_channels * layer.patches**2)
    bound = 1 / math.sqrt(layer.encoding_width)
    assert layer.projection.abs().max() <= bound and layer.projection.std() > bound / 3
    names = {n for n, _ in model.named_parameters()}
    assert not any("projection" in n for n in names)
    assert {"layers.0.projection", "layers.0.projection_bias"} <= set(model.state_dict())
    before = [(lay.projection.clone(), lay.projection_bias.clone()) for lay in model.layers]
    trainer = make_trainer(model, cfg, progress=False, image_shape=(1, 8, 8))
    x, y = torch.rand(16, 64), torch.randint(0, 4, (16,))
    trainer.step(x, y, torch.arange(16))
    for lay, (w, b) in zip(model.layers, before, strict=True):
        assert torch.equal(lay.projection, w) and torch.equal(lay.projection_bias, b)
    torch.manual_seed(3)
    again = build_model(cfg, 64, 4, input_shape=(1, 8, 8))
    assert torch.equal(again.layers[2].projection, model.layers[2].projection)  # the seed fixes the draw


def test_rms_pooling_keeps_patch_energy_and_a_silent_window_a_finite_gradient():
    torch.manual_seed(1)
    h = torch.relu(torch.randn(2, 3, 8, 8))
    pooled = rms_pool2d(h, 2)
    assert torch.allclose(pooled, F.avg_pool2d(h**2, 2).sqrt())
    assert torch.allclose(patch_goodness(pooled, 2), patch_goodness(h, 2), atol=1e-6)  # goodness before = after
    z = torch.zeros(1, 1, 4, 4, requires_grad=True)
    rms_pool2d(z * 1.0, 2).sum().backward()
    assert torch.isfinite(z.grad).all() and (z.grad == 0).all()


def test_channel_layer_norm_standardises_each_position_across_channels():
    x = torch.randn(2, 5, 3, 4) * 3 + 1
    z = channel_layer_norm(x)
    assert torch.allclose(z.mean(1), torch.zeros(2, 3, 4), atol=1e-5)
    assert torch.allclose(z.var(1, unbiased=False), torch.ones(2, 3, 4), atol=1e-3)
    assert torch.allclose(z, F.layer_norm(x.permute(0, 2, 3, 1), (5,)).permute(0, 3, 1, 2))


def test_the_patch_rule_gives_shallow_learners_more_patches():
    widths = [64, 128, 256, 256, 512, 512, 512, 512]
    assert patch_counts(widths, [16, 8, 8, 4, 4, 2, 2, 1], 1.0) == [8, 4, 2, 2, 1, 1, 1, 1]
    assert patch_counts(widths, [4, 8, 8, 4, 4, 2, 2, 1], 1.0)[0] == 4  # at most the map's side
    assert patch_counts([8, 16], [8, 8], 0.25) == [1, 1]  # at least 1
    assert patch_counts([8, 16], [8, 8], 1.0, [3, 2]) == [3, 2]  # given counts win


def test_no_gradient_crosses_learners_and_no_label_enters_the_input():
    torch.manual_seed(0)
    model = build_model(small_config(), 64, 4, input_shape=(1, 8, 8))
    assert not model.embedding.has_label and model.competitive
    x, y = torch.rand(8, 64), torch.randint(0, 4, (8,))
    results = model.local_losses(x, len(x), labels=y)
    params = [list(layer.parameters()) for layer in model.layers]
    for i, result in enumerate(results):
        for j, ps in enumerate(params):
            grads = torch.autograd.grad(result.loss, ps, retain_graph=True, allow_unused=True)
            if j == i:
                assert all(g is not None and g.abs().sum() > 0 for g in grads)
            else:
                assert all(g is None for g in grads), (i, j)
    # the scores do not depend on any label: the same input scores the same whatever the batch's labels
    scores = model.label_scores(x)
    assert scores.shape == (8, 4, 3) and torch.equal(model.label_scores(x), scores)


def test_learners_after_the_first_take_channel_normalised_input():
    torch.manual_seed(0)
    model = build_model(small_config(), 64, 4, input_shape=(1, 8, 8))
    assert [layer.input_norm for layer in model.layers] == ["none", "channel", "channel"]
    plain = build_model(small_config(table={"layer_norm": False}), 64, 4, input_shape=(1, 8, 8))
    assert [layer.input_norm for layer in plain.layers] == ["none", "none", "none"]


@pytest.mark.parametrize(
    ("model", "train", "message"),
    [
        ({"loss": "softplus"}, {}, r"model.loss"),
        ({"label": "channels"}, {}, r"model.label"),
        ({}, {"negatives": "random"}, r"negatives"),
        ({"goodness": "sum_squares"}, {}, r"model.goodness: a spatial-goodness learner"),
        ({"input_norm": "group"}, {}, r"model.input_norm"),
    ],
)
def test_settings_these_learners_do_not_take_are_refused_by_name(model, train, message):
    with pytest.raises(ConfigError, match=message):
        small_config(model, train=train)


def test_patches_beyond_the_map_or_of_the_wrong_count_are_refused():
    with pytest.raises(ConfigError, match=r"spatial_goodness.patches: expected one positive count per learner \(3\)"):
        small_config(table={"patches": [1, 1]})
    with pytest.raises(ConfigError, match=r"model layer 0 .*patches must be in 1..4"):
        build_model(small_config(table={"patches": [5, 1, 1]}), 64, 4, input_shape=(1, 8, 8))


def test_the_preset_builds_the_papers_vgg_blocks():
    cfg = load_config(PRESET)
    torch.manual_seed(0)
    model = build_model(cfg, 3 * 32 * 32, 10, input_shape=(3, 32, 32))
    assert model.kind == "spatial-goodness" and family_of(model).name == "spatial-goodness"
    shapes = [(layer.in_shape, layer.out_shape) for layer in model.layers]
    assert shapes == [
        ((3, 32, 32), (64, 16, 16)),
        ((64, 16, 16), (128, 8, 8)),
        ((128, 8, 8), (256, 8, 8)),
        ((256, 8, 8), (256, 4, 4)),
        ((256, 4, 4), (512, 4, 4)),
        ((512, 4, 4), (512, 2, 2)),
        ((512, 2, 2), (512, 2, 2)),
        ((512, 2, 2), (512, 1, 1)),
    ]
    assert [layer.patches for layer in model.layers] == [8, 4, 2, 2, 1, 1, 1, 1]
    assert [layer.encoding_width for layer in model.layers] == [4096, 2048, 1024, 1024, 512, 512, 512, 512]
    assert all(layer.pool_mode == "rms" and layer.kernel == 3 and layer.activation == "relu" for layer in model.layers)
    assert sum(p.numel() for p in model.parameters()) == 9_220_480  # VGG-11's convolutions, weights and biases
    assert model.predict_layers == list(range(8))
    header = PRESET.read_text().split("\n[", 1)[0]
    for needle in ("KAI-Laboratory/ASGE", "2509.12394", "90.62%", "NOT a reproduction", "ASSUMED", "NO commit"):
        assert needle in header, needle


@pytest.mark.slow
def test_a_short_run_on_a_few_hundred_digits_learns(tmp_path):
    """~2 s: 500 of the 8x8 digits, 3 epochs; chance is 10%."""
    cfg = small_config(
        {"hidden": [16, 32], "pool": [2, 1]},
        train={"epochs": 3, "batch_size": 25, "lr": 0.01, "threads": 1, "checkpoint_every": 0},
        data={"name": "digits", "train_subset": 500, "test_subset": 300},
        eval={"train_accuracy": False},
    )
    summary = train_run(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    assert summary["test_accuracy"] > 0.6, summary
    model, _, _ = load_checkpoint(tmp_path / "run")  # the fixed maps come back with the weights
    ds = load_dataset("digits")
    result = evaluate(model, ds.test_x[:300], ds.test_y[:300], primary="goodness")
    assert model.kind == "spatial-goodness" and result["accuracy"] == pytest.approx(summary["test_accuracy"])
