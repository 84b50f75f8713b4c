"""Residual FF (kind "residual-ff", DeeperForward's deep FF network): the preset builds the paper's ResNet-17 (its
layer shapes and its 30,602,700 weights), each learner's scores and loss are the original's formula computed here
by hand, no gradient crosses learners, the lr schedule is torch's per-epoch cosine annealing to a floor, and a
small network learns synthetic 32x32 images; the layer-parallel pipeline trains exactly as one process does."""

from __future__ import annotations

import json
import math
import tomllib

import pytest
import torch
import torch.nn.functional as F
from repo import REPO

from fflab.cli import main
from fflab.config import config_from_dict, load_config, to_toml
from fflab.errors import ConfigError
from fflab.families import get_family
from fflab.models import build_model
from fflab.models.residual import ResidualFFNetwork, sip_range
from fflab.training.evaluate import evaluate

PRESET = REPO / "configs" / "reference" / "deeperforward-resnet17.toml"
MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions run 15x slower on two threads than on one on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_config(table: dict | None = None, model: dict | None = None, train: dict | None = None):
    """Five learners for 4 classes: a stem, a block that adds its input, a strided block that concatenates it."""
    sections = {
        "model": {
            "kind": "residual-ff",
            "architecture": "conv",
            "hidden": [4, 4, 4, 8, 8],
            "stride": [1, 1, 1, 2, 1],
            "input_norm": "none",
            "goodness": "mean_activity",
            "loss": "competitive",
            "alpha": 1.0,
            "label": "none",
            **(model or {}),
        },
        "train": {"negatives": "none", "optimizer": "adamw", "lr": 0.01, "batch_size": 32, **(train or {})},
        "residual_ff": {
            "joins": ["add", "concat"],
            "bias": False,
            "init_fan": "out",
            "channel_mean": MEAN,
            "channel_std": STD,
            **(table or {}),
        },
    }
    return config_from_dict(sections)


def test_the_preset_is_deeperforwards_resnet17():
    cfg = load_config(PRESET)
    torch.manual_seed(0)
    model = build_model(cfg, 3 * 32 * 32, 10, (3, 32, 32))
    assert isinstance(model, ResidualFFNetwork) and model.kind == "residual-ff" and len(model.layers) == 17
    stages = [(100, 32), (200, 16), (400, 8), (800, 4)]
    widths = [100] + [w for w, _ in stages for _ in range(4)]
    for i, layer in enumerate(model.layers):
        assert layer.out_shape == (widths[i], *(2 * [dict(stages)[widths[i]]])), i
        assert layer.conv.bias is None and layer.conv.stride == ((2, 2) if i in (5, 9, 13) else (1, 1))
    # inputs: the image, then each learner's output, doubled where a block concatenates its input (layers 4, 8, 12)
    assert [layer.in_shape[0] for layer in model.layers] == [3, 100, 100, 100, 100, 200, 200, 200, 200, 400, 400,
                                                            400, 400, 800, 800, 800, 800]  # fmt: skip
    assert model.joins == [None] + [None, "add", None, "concat"] * 4  # the second learner of each block joins
    assert model.taps == [True] + [False, True] * 8  # the stem's and each block's output start the next shortcut
    # The original's Resnet(planes=(100, 200, 400, 800)): 17 bias-free 3x3 CWConvs
    original = 3 * 100 * 9 + 4 * 100 * 100 * 9 + 4 * 200 * 200 * 9 + 4 * 400 * 400 * 9 + 4 * 800 * 800 * 9
    assert sum(p.numel() for p in model.parameters()) == original == 30_602_700
    # kaiming_normal_(mode="fan_out", nonlinearity="relu"): std sqrt(2 / (out channels x 9)), also for the stem
    assert model.layers[0].conv.weight.std().item() == pytest.approx(math.sqrt(2 / 900), rel=0.05)
    assert model.layers[16].conv.weight.std().item() == pytest.approx(math.sqrt(2 / 7200), rel=0.01)
    assert model.predict_layers == list(range(1, 17)) and model.forward_flops() == 2 * 1_477_324_800
    assert config_from_dict(tomllib.loads(to_toml(cfg))) == cfg  # `fflab settings` writes the [residual_ff] table
    family = get_family("residual-ff")
    options = family.options(cfg)
    assert (options.lr_min, options.lr_every, cfg.train.lr, cfg.train.epochs) == (0.008, "epoch", 0.08, 150)


def by_hand(model, x, labels, strides):
    """The original's arithmetic (model/cwconv.py, model/resnet.py), written out: per learner the class scores
    g[n, k] = mean of ReLU(conv) over class k's channels and every position, the loss CE(g, labels), and what it
    passes on, GroupNorm(ReLU(conv); classes), plus or beside the block's input (pooled to the map size)."""
    classes = model.num_classes
    z = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    z = F.layer_norm(z, z.shape[1:])
    scores, losses = [], []

    def learner(i, inp):
        y = F.relu(F.conv2d(inp, model.layers[i].conv.weight, stride=strides[i], padding=1))
        g = y.reshape(len(y), classes, -1).mean(2)
        scores.append(g)
        losses.append(F.cross_entropy(g, labels))
        return F.group_norm(y, classes)

    shortcut = z = learner(0, z)
    z = learner(1, z)
    shortcut = z = learner(2, z) + shortcut  # block 1: "add"
    z = learner(3, z)
    z = torch.cat([learner(4, z), F.avg_pool2d(shortcut, 2)], 1)  # block 2: "concat", the map halved by learner 3
    return torch.stack(scores, 2), torch.stack(losses), z


def test_scores_and_losses_are_the_originals_formula():
    torch.manual_seed(1)
    cfg = small_config()
    model = build_model(cfg, 3 * 32 * 32, 4, (3, 32, 32)).eval()
    x, labels = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 1, 2])
    scores, losses, _ = by_hand(model, x, labels, cfg.model.stride)
    results = model.local_losses(x.flatten(1), len(x), labels=labels)
    torch.testing.assert_close(torch.stack([r.loss for r in results]), losses)
    torch.testing.assert_close(model.label_scores(x), scores)
    # the goodness statistics: the true class's score, then the mean of the others'
    own = scores[:, :, 2].gather(1, labels.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(results[2].goodness, torch.cat([own, (scores[:, :, 2].sum(1) - own) / 3]))
    torch.testing.assert_close(model(x), scores[:, :, 1:].sum(2))  # predict_layers default: all but the first
    assert [h.shape[1] for h in model.activities(x)] == [4, 4, 4, 8, 8]


def test_no_gradient_crosses_learners():
    torch.manual_seed(2)
    model = build_model(small_config(model={"dropout": 0.2}), 3 * 32 * 32, 4, (3, 32, 32)).train()
    x, labels = torch.rand(5, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0])
    results = model.local_losses(x.flatten(1), len(x), labels=labels)
    weights = [layer.conv.weight for layer in model.layers]
    for i, r in enumerate(results):
        grads = torch.autograd.grad(r.loss, weights, allow_unused=True, retain_graph=True)
        assert grads[i] is not None and grads[i].abs().sum() > 0
        assert all(g is None for j, g in enumerate(grads) if j != i), i
    # the greedy schedule's narrowing: learner 3 alone learns, the ones below run without a graph
    [only] = model.local_losses(x.flatten(1), len(x), layers=[3], labels=labels)
    assert torch.autograd.grad(only.loss, weights[3]) and only.loss.grad_fn is not None


def test_the_schedule_is_cosine_annealing_per_epoch_to_a_floor():
    cfg = small_config({"lr_min": 0.001, "lr_every": "epoch"}, train={"epochs": 5, "lr_decay": "cosine"})
    trainer = get_family("residual-ff").make_trainer(build_model(cfg, 3072, 4, (3, 32, 32)), cfg, progress=False)
    reference = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=0.01)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=5, eta_min=0.001)
    steps = 7  # batches per epoch
    for epoch in range(5):
        for batch in range(steps):
            lr = trainer._set_lr((epoch * steps + batch) / (5 * steps))
            assert lr == pytest.approx(reference.param_groups[0]["lr"], abs=1e-12), (epoch, batch)
            assert trainer.optimizers[4].param_groups[0]["lr"] == lr
        reference.step()
        scheduler.step()
    per_batch = small_config({"lr_min": 0.001}, train={"epochs": 5, "lr_decay": "cosine"})
    trainer = get_family("residual-ff").make_trainer(build_model(per_batch, 3072, 4, (3, 32, 32)), per_batch)
    assert trainer._set_lr(0.5) == pytest.approx(0.001 + 0.009 * 0.5)


@pytest.mark.parametrize(
    ("table", "model", "message"),
    [
        ({"joins": ["add", "add"]}, {}, "learner 4 adds a shortcut of 4 channels to its 8"),
        ({"joins": ["add"]}, {}, r"one join per residual block \(2\)"),
        ({"block_layers": 3}, {}, "do not form blocks of 3"),
        ({"joins": ["add", "stack"]}, {}, "unknown join 'stack'"),
        ({}, {"pool": [1, 1, 1, 1, 1]}, "model.pool"),
        ({}, {"input_norm": "group"}, r"model.input_norm.*image_norm"),
        ({"lr_min": 1.0}, {}, "above train.lr"),
        ({"block_layers": 0}, {}, "block_layers = 0 makes none"),
    ],
)
def test_wiring_errors_name_the_setting(table, model, message):
    with pytest.raises(ConfigError, match=message):
        small_config(table, model)


def test_joins_default_to_the_papers_rule():
    cfg = small_config({"joins": []})
    assert get_family("residual-ff").wiring(cfg)[0] == [None, None, "add", None, "concat"]
    plain = small_config({"joins": [], "block_layers": 0})
    model = build_model(plain, 3072, 4, (3, 32, 32))
    assert model.joins == [None] * 5 and [layer.in_shape[0] for layer in model.layers] == [3, 4, 4, 4, 8]


def test_sip_picks_the_best_consecutive_layers():
    labels = torch.tensor([0, 1, 0, 1])
    right, wrong = F.one_hot(labels, 2).float(), F.one_hot(1 - labels, 2).float()
    layer0 = wrong  # wrong on every sample
    layer1 = torch.cat([right[:3], 0.5 * wrong[3:]])  # right on 0-2, narrowly wrong on 3
    layer2 = torch.cat([0.5 * wrong[:1], right[1:]])  # narrowly wrong on 0, right on 1-3
    scores = torch.stack([layer0, layer1, layer2], 2)  # [N, C, L]
    assert sip_range(scores, labels) == (1, 2, 1.0)  # neither alone, both together
    assert sip_range(scores[:, :, :2], labels) == (1, 1, 0.75)
    model = build_model(small_config(), 3072, 4, (3, 32, 32))
    x, y = torch.rand(12, 3, 32, 32), torch.randint(0, 4, (12,))
    accuracy = model.select_layers(x, y)
    assert evaluate(model, x, y)["accuracy"] == pytest.approx(accuracy) and model.predict_layers


def synthetic_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """32x32 RGB images of 4 classes, told apart by texture (stripes across, stripes down, a checkerboard, none)
    under random brightness and noise: features a mean over every position can find."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=gen)
    rows, cols = torch.arange(32).view(-1, 1) // 2 % 2, torch.arange(32).view(1, -1) // 2 % 2
    patterns = torch.stack([rows.expand(32, 32), cols.expand(32, 32), (rows + cols) % 2, torch.zeros(32, 32)])
    level = 0.2 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen)
    x = level + 0.4 * patterns[y].unsqueeze(1) + 0.1 * torch.randn(n, 3, 32, 32, generator=gen)
    return x.clamp(0, 1), y


def test_a_small_residual_network_learns_synthetic_images():
    torch.manual_seed(0)
    cfg = small_config(
        {"lr_min": 0.001, "lr_every": "epoch"},
        model={"dropout": 0.1, "predict_layers": [1, 2, 3, 4]},
        train={"epochs": 3, "lr_decay": "cosine", "threads": 1},
    )
    x, y = synthetic_images(256, 0)
    test_x, test_y = synthetic_images(128, 1)
    model = build_model(cfg, 3072, 4, (3, 32, 32))
    before = evaluate(model, test_x, test_y)["accuracy"]
    history = get_family("residual-ff").make_trainer(model, cfg, progress=False).fit(x, y)
    assert [h.epoch for h in history] == [1, 2, 3] and history[-1].lr == pytest.approx(0.001 + 0.009 * 0.25)
    assert all(a > b for a, b in zip(history[0].loss, history[-1].loss, strict=True))
    after = evaluate(model, test_x, test_y)
    assert after["accuracy"] > max(0.9, before) and len(after["accuracy_per_layer"]) == 5


DIGITS_CONFIG = """
[data]
name = "digits"

[model]
kind = "residual-ff"
architecture = "conv"
hidden = [10, 10, 10, 20, 20]
stride = [1, 1, 1, 2, 1]
input_norm = "none"
goodness = "mean_activity"
loss = "competitive"
alpha = 1.0
label = "none"

[train]
epochs = 2
lr = 0.01
optimizer = "adamw"
negatives = "none"
threads = 1
device = "cpu"
monitor_size = 200

[residual_ff]
bias = false
init_fan = "out"
lr_min = 0.001
lr_every = "epoch"
"""


@pytest.mark.slow
def test_the_layer_parallel_pipeline_trains_as_one_process_does(tmp_path):
    """`fflab train --parallel pipeline` (DeeperForward's layer-parallel schedule as fflab's pipeline): each stage
    sends what its last learner passes on and the live shortcut; the weights equal a one-process run's."""
    from safetensors.torch import load_file

    config = tmp_path / "digits-residual.toml"
    config.write_text(DIGITS_CONFIG)
    common = ["train", str(config), "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "single")]) == 0
    assert main([*common, "--parallel", "pipeline", "--workers", "2", "--out", str(tmp_path / "pipe")]) == 0
    single = json.loads((tmp_path / "single" / "summary.json").read_text())
    pipe = json.loads((tmp_path / "pipe" / "summary.json").read_text())
    assert single["model"] == "residual-ff" and pipe["test_accuracy"] == single["test_accuracy"] > 0.5
    assert len(pipe["parallel"]["layers_per_stage"]) == 2
    a, b = load_file(tmp_path / "single" / "model.safetensors"), load_file(tmp_path / "pipe" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
