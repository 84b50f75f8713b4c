"""configs/reference/: each public FF code's rule checked against its own formula, transcribed from the original on
a tiny hand example, each preset's architecture as built, and a short run of each (issue 43).

The originals, as read for these presets (repository, commit, file):
- mpezeshki/pytorch_forward_forward 1c7a211, main.py;
- loeweX/Forward-Forward da516f0, src/ff_model.py, src/ff_mnist.py, src/utils.py, config.yaml;
- CheneyX2000/Forward_Forward_Algorithm 04b81a8, FFN/FFLayer.py, FFN/FFNetwork.py, test_on_mnist.ipynb;
- and-rewsmith/RecurrentForwardForward 8fefe97, RecurrentFF/model/hidden_layer.py, inner_layers.py, model.py;
- Nicola97/Spike-Implementation-of-the-Recurrent-Forward-Forward-Algorithm c55444d, recurrent_ff/recurrent_ff.py,
  spike_recurrent_ff/FF_ricorrente_spike.py.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from repo import REPO
from torch import nn

from fflab.config import config_from_dict, load_config
from fflab.errors import ConfigError
from fflab.layers.recurrent import RecurrentLayer
from fflab.models import build_model
from fflab.supervision import LabelEmbedding, permuted_labels, random_wrong_labels, wrong_labels
from fflab.training.run import train_run
from fflab.training.trainer import lr_factor, make_trainer

# the originals' nn.Linear(0, width), transcribed below, warn as they do there
pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")

PRESETS = ["pezeshki", "loewex", "cheneyx", "rewsmith-recurrent", "nicola-metalayer", "nicola-spiking-metalayer"]
MNIST = {"input_dim": 784, "num_classes": 10, "input_shape": (1, 28, 28)}


def preset(name: str, *overrides: str):
    return load_config(REPO / "configs" / "reference" / f"{name}.toml", list(overrides))


def built(name: str, *overrides: str, seed: int = 0):
    """The preset's network and trainer for MNIST-shaped inputs."""
    cfg = preset(name, *overrides)
    torch.manual_seed(seed)
    model = build_model(cfg, **MNIST)
    return cfg, model, make_trainer(model, cfg, progress=False, image_shape=(1, 28, 28))


def overlay_y_on_x(x: torch.Tensor, y) -> torch.Tensor:
    """mpezeshki's (and Nicola97's) overlay, verbatim."""
    x_ = x.clone()
    x_[:, :10] *= 0.0
    x_[range(x.shape[0]), y] = x.max()
    return x_


def drawn_with(trainer, draw):
    """What `draw(generator)` gives from the trainer's generator as it is now (the step about to run draws it)."""
    gen = torch.Generator()
    gen.set_state(trainer.generator.get_state())
    return draw(gen)


# --- mpezeshki/pytorch_forward_forward ----------------------------------------------------------------------------


def test_pezeshki_label_is_written_at_the_batch_maximum():
    x = torch.tensor([[0.5, -0.4, 2.0, 0.1, 3.0, -1.0, 0.2, 0.0, 0.7, 0.3, 0.9, 1.1], [0.1] * 12])
    emb = LabelEmbedding("overlay", 10, 12, at_input_max=True)
    y = torch.tensor([2, 7])
    assert torch.equal(emb.embed(x, y), overlay_y_on_x(x, y))
    assert torch.allclose(emb.neutral(x)[:, :10], torch.full((2, 10), 0.3))  # x.max() / 10
    cfg, model, _ = built("pezeshki", "model.hidden=[6,5]")
    assert model.embedding.at_input_max
    image = x.repeat(1, 66)[:, :784]
    scores = model.label_scores(image)  # the dense path shares its first product across the labels
    for c in range(10):
        h0 = model.layers[0](overlay_y_on_x(image, [c, c]))
        by_hand = torch.stack([h0.pow(2).mean(1), model.layers[1](h0).pow(2).mean(1)], 1)
        assert torch.allclose(scores[:, c], by_hand, atol=1e-5)


def test_pezeshki_negatives_are_a_permutation_that_can_repeat_the_true_label():
    y = torch.tensor([3, 3, 1, 0, 2, 3, 1, 4])
    gen = torch.Generator().manual_seed(0)
    perms = [permuted_labels(y, gen) for _ in range(20)]
    assert all(sorted(p.tolist()) == sorted(y.tolist()) for p in perms)  # y[torch.randperm(n)]
    assert any((p == y).any() for p in perms), "the bug: some 'negatives' carry the true label"
    gen = torch.Generator().manual_seed(0)
    assert not any((random_wrong_labels(y, 5, gen) == y).any() for _ in range(200)), "fflab's default never does"
    assert (
        wrong_labels("permuted_with_repeats", y, 5, torch.Generator().manual_seed(1)).tolist()
        == permuted_labels(y, torch.Generator().manual_seed(1)).tolist()
    )
    assert config_from_dict({}).train.negatives == "random"


def test_pezeshki_negatives_are_drawn_once_and_kept():
    cfg, model, trainer = built("pezeshki", "model.hidden=[6,5]", "train.batch_size=4")
    x, y = torch.rand(8, 784), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    trainer.start_epoch(x, y, 1)
    fixed = trainer.fixed_wrong.clone()
    assert sorted(fixed.tolist()) == sorted(y.tolist())
    idx = torch.tensor([5, 2])
    pairs = trainer.make_pairs(x[idx], y[idx], idx=idx)
    assert torch.equal(pairs[2:], model.embedding.embed(x[idx], fixed[idx]))
    trainer.start_epoch(x, y, 2)
    assert torch.equal(trainer.fixed_wrong, fixed)
    assert torch.equal(trainer.state_dict()["fixed_wrong"], fixed)
    with pytest.raises(ConfigError, match="fixed_negatives"):
        preset("pezeshki", "train.negatives=hard", "train.hard_scores=first_layer")


def test_pezeshki_layer_matches_its_loss_and_normalisation():
    """g = relu(W x / (|x| + 1e-4) + b).pow(2).mean(1); loss log(1 + exp([-g_pos + 2, g_neg - 2])).mean()."""
    cfg, model, _ = built("pezeshki", "model.hidden=[6,5]")
    layer = model.layers[0]
    x = torch.randn(4, 784)
    w, b = layer.linear.weight, layer.linear.bias
    h_ref = torch.relu(torch.mm(x / (x.norm(2, 1, keepdim=True) + 1e-4), w.T) + b)
    assert torch.allclose(layer(x), h_ref, atol=1e-4)
    g_pos, g_neg = h_ref[:2].pow(2).mean(1), h_ref[2:].pow(2).mean(1)
    ref = torch.log(1 + torch.exp(torch.cat([-g_pos + 2.0, g_neg - 2.0]))).mean()
    assert torch.allclose(layer.local_loss(layer(x), 2)[0], ref, atol=1e-5)


# --- loeweX/Forward-Forward ---------------------------------------------------------------------------------------


class ReLUFullGrad(torch.autograd.Function):
    """loeweX's ReLU_full_grad, verbatim."""

    @staticmethod
    def forward(ctx, input):
        return input.clamp(min=0)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.clone()


def test_loewex_relu_passes_its_gradient_straight_through():
    from fflab.layers.dense import ACTIVATIONS

    x = torch.tensor([-2.0, -0.5, 0.0, 1.5], requires_grad=True)
    y = ACTIVATIONS["relu_straight_through"](x)
    assert y.tolist() == [0.0, 0.0, 0.0, 1.5]
    (y * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 4.0]  # relu's would be [0, 0, 0, 4]


def test_loewex_loss_is_bce_around_the_layer_width():
    """BCEWithLogits(sum(z^2) - z.shape[1], is_positive), by hand on 2 positive and 2 negative rows of 3 units."""
    cfg, model, _ = built("loewex", "model.hidden=[3,3,3]", "model.theta=3.0", "model.peer_weight=0.0")
    z = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.5, 0.5], [2.0, 0.0, 0.0], [0.0, 0.0, 0.1]])
    g = (z**2).sum(1)
    by_hand = (math.log1p(math.exp(-(g[0] - 3))) + math.log1p(math.exp(-(g[1] - 3)))) / 4 + (
        math.log1p(math.exp(g[2] - 3)) + math.log1p(math.exp(g[3] - 3))
    ) / 4
    loss, _ = model.layers[0].local_loss(z, 2)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    assert loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(g - 3, torch.tensor([1.0, 1, 0, 0])).item())


def test_loewex_training_steps_match_the_original_model():
    """Three steps of the preset (3 layers, straight-through ReLU, peer normalisation 6e-6 per the conversion, SGD
    with weight decay, the jointly trained bias-free classifier) equal loeweX's FF_model and optimiser step."""
    h = 20
    sets = [f"model.hidden=[{h},{h},{h}]", f"model.theta={float(h)}", f"model.peer_weight={0.03 * 0.2 / h}"]
    cfg, model, trainer = built("loewex", *sets)
    lin = [copy.deepcopy(layer.linear) for layer in model.layers]
    clf = nn.Linear(2 * h, 10, bias=False)
    nn.init.zeros_(clf.weight)
    running = [torch.zeros(h) + 0.5 for _ in range(3)]
    opt = torch.optim.SGD(
        [
            {"params": [p for m in lin for p in m.parameters()], "lr": 1e-3, "weight_decay": 3e-4, "momentum": 0.9},
            {"params": clf.parameters(), "lr": 1e-2, "weight_decay": 3e-3, "momentum": 0.9},
        ]
    )

    def layer_norm(z):
        return z / (torch.sqrt(torch.mean(z**2, dim=-1, keepdim=True)) + 1e-8)

    def labelled(x, y):
        z = x.clone()
        z[:, :10] = F.one_hot(y, 10).float() if y is not None else 0.1
        return z

    def original_step(x, y, wrong):
        n = len(x)
        z = layer_norm(torch.cat([labelled(x, y), labelled(x, wrong)]))
        posneg = torch.zeros(2 * n)
        posneg[:n] = 1
        loss = 0
        for i, m in enumerate(lin):
            z = ReLUFullGrad.apply(m(z))
            running[i] = running[i].detach() * 0.9 + torch.mean(z[:n], dim=0) * 0.1
            loss = loss + 0.03 * torch.mean((torch.mean(running[i]) - running[i]) ** 2)
            loss = loss + F.binary_cross_entropy_with_logits(torch.sum(z**2, dim=-1) - z.shape[1], posneg)
            z = layer_norm(z.detach())
        zz, features = layer_norm(labelled(x, None)), []
        with torch.no_grad():
            for i, m in enumerate(lin):
                zz = layer_norm(ReLUFullGrad.apply(m(zz)))
                if i >= 1:
                    features.append(zz)
        out = clf(torch.cat(features, -1))
        loss = loss + F.cross_entropy(out - out.max(-1, keepdim=True)[0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    torch.manual_seed(1)
    x, y = torch.rand(50, 784), torch.randint(0, 10, (50,))
    for _ in range(3):
        wrong = drawn_with(trainer, lambda g: random_wrong_labels(y, 10, g))
        trainer.step(x, y, torch.arange(50))
        original_step(x, y, wrong)
    for mine, theirs in zip(model.layers, lin, strict=True):
        assert torch.allclose(mine.linear.weight, theirs.weight, atol=1e-6)
        assert torch.allclose(mine.linear.bias, theirs.bias, atol=1e-6)
    assert model.readout.linear.bias is None
    assert torch.allclose(model.readout.linear.weight, clf.weight, atol=1e-6)


def test_loewex_cooldown_steps_down_each_epoch_after_the_middle():
    """get_linear_cooldown_lr: lr * 2 * (1 + E - e) / E for e > E // 2 (0-based epoch), else lr."""
    epochs = 100
    for e in (0, 50, 51, 75, 99):
        expected = 2 * (1 + epochs - e) / epochs if e > epochs // 2 else 1.0
        for within in (0.0, 0.5, 0.99):
            assert lr_factor("cooldown_per_epoch", (e + within) / epochs, epochs) == pytest.approx(expected)
    cfg, model, trainer = built("loewex", "model.hidden=[4,4,4]", "train.epochs=8")
    assert trainer._set_lr(0.99) == pytest.approx(0.001 * 0.5)  # epoch 7 of 8: 2 (1 + 8 - 7) / 8
    assert trainer.online_readout.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5)  # the classifier too


# --- CheneyX2000/Forward_Forward_Algorithm ----------------------------------------------------------------------------


def test_cheneyx_update_is_goodness_ascent_and_descent_by_hand():
    """FFLayer.update_weights: W += lr * 2 outer(x, a (1 - a^2)) (positive), -= (negative), a = tanh(x W + b), both
    from activities before the update; then the next layer sees the rows through the updated layer."""
    cfg, model, trainer = built("cheneyx", "model.hidden=[4,3,2]")
    lr = cfg.train.lr
    x = torch.rand(1, 784)
    y = torch.tensor([3])
    wrong = drawn_with(trainer, lambda g: random_wrong_labels(y, 10, g))
    pos, neg = model.embedding.embed(x, y)[0], model.embedding.embed(x, wrong)[0]
    weights = [(layer.linear.weight.detach().T.clone(), layer.linear.bias.detach().clone()) for layer in model.layers]
    expected = []
    for w, b in weights:  # FFNetwork.train_layer, then forward through the updated layer
        a_p, a_n = torch.tanh(pos @ w + b), torch.tanh(neg @ w + b)
        w = w + lr * 2 * torch.outer(pos, a_p * (1 - a_p**2)) - lr * 2 * torch.outer(neg, a_n * (1 - a_n**2))
        b = b + lr * 2 * a_p * (1 - a_p**2) - lr * 2 * a_n * (1 - a_n**2)
        expected.append((w, b))
        pos, neg = torch.tanh(pos @ w + b), torch.tanh(neg @ w + b)
    trainer.step(x, y, torch.tensor([0]))
    for layer, (w, b) in zip(model.layers, expected, strict=True):
        assert torch.allclose(layer.linear.weight.T, w, atol=1e-6)
        assert torch.allclose(layer.linear.bias, b, atol=1e-6)


def test_cheneyx_unbounded_loss_and_he_init():
    cfg, model, _ = built("cheneyx")
    layer = model.layers[0]
    h = torch.tensor([[0.5, -0.2], [0.1, 0.9], [0.3, 0.3], [0.0, 1.0]])
    loss, _ = layer.local_loss(h, 2)
    g = (h**2).sum(1)
    assert loss.item() == pytest.approx(((g[2] + g[3]) / 2 - (g[0] + g[1]) / 2).item())
    w = model.layers[0].linear.weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / 794), rel=0.02)  # randn(in, out) * sqrt(2 / in)
    assert torch.all(model.layers[0].linear.bias == 0)


# --- and-rewsmith/RecurrentForwardForward -------------------------------------------------------------------------


@pytest.mark.parametrize("bias_init", ["none", "torch"])
def test_rewsmith_batch_matches_the_original_hidden_layers(bias_init):
    """Two batches of the preset (3 small layers) equal the original's: 3 undamped neutral steps, then 10 damped
    label steps with an RMSprop step of each layer at each, leaky ReLU of W_f in - W_b above + W_l self, neighbours
    at unit RMS, image and label raw; without biases as at 8fefe97 (F.linear(x, W)), or with one per source as
    since 7e4621a (F.linear(x, W, b), the top-down one negated with its term)."""
    widths = [12, 10, 8]
    cfg, model, trainer = built("rewsmith-recurrent", "model.hidden=[12,10,8]", f"recurrent.bias_init={bias_init}")
    params = []
    for layer in model.layers:
        up, down, _ = layer.dims
        w = layer.linear.weight.detach()
        p = {"Wf": w[:, :up], "Wb": w[:, up : up + down], "Wl": w[:, up + down :]}
        if bias_init == "torch":
            p.update(bf=layer.linear.bias.detach(), bb=layer.bias_down.detach(), bl=layer.bias_lat.detach())
        else:
            assert layer.linear.bias is None
        params.append({k: v.clone().requires_grad_(True) for k, v in p.items()})
    opts = [torch.optim.RMSprop(list(p.values()), lr=cfg.train.lr, momentum=0.0) for p in params]

    def std(a):
        return a / torch.sqrt(torch.mean(a**2, dim=1, keepdim=True) + 1e-8)

    def forward(i, prev, data, labels, damp):  # HiddenLayer.forward
        p, last = params[i], len(widths) - 1
        act = F.linear(data if i == 0 else std(prev[i - 1]), p["Wf"], p.get("bf"))
        act = act - F.linear(labels if i == last else std(prev[i + 1]), p["Wb"], p.get("bb"))
        new = F.leaky_relu(act + F.linear(std(prev[i]), p["Wl"], p.get("bl")))
        return (1 - 0.7) * prev[i] + 0.7 * new if damp else new

    def original_batch(x, y, wrong):
        n = len(x)
        pos, neg = [torch.zeros(n, w) for w in widths], [torch.zeros(n, w) for w in widths]
        with torch.no_grad():
            for _ in range(3):  # one preinitialisation step per layer
                neutral = torch.full((n, 10), 0.1)
                pos = [forward(i, pos, x, neutral, False) for i in range(3)]
                neg = [forward(i, neg, x, neutral, False) for i in range(3)]
        one_pos, one_neg = F.one_hot(y, 10).float(), F.one_hot(wrong, 10).float()
        for _ in range(10):  # advance_layers_train: each layer's train_layer, then all advance
            new_pos, new_neg = [], []
            for i in range(3):
                opts[i].zero_grad()
                a_p, a_n = forward(i, pos, x, one_pos, True), forward(i, neg, x, one_neg, True)
                g_p, g_n = a_p.pow(2).mean(1), a_n.pow(2).mean(1)
                F.softplus(torch.cat([-g_n + 1.5, g_p - 1.5])).mean().backward()
                opts[i].step()
                new_pos.append(a_p.detach())
                new_neg.append(a_n.detach())
            pos, neg = new_pos, new_neg

    torch.manual_seed(2)
    x, y = (torch.rand(8, 784) - 0.1307) / 0.3081, torch.randint(0, 10, (8,))
    for _ in range(2):
        wrong = drawn_with(trainer, lambda g: random_wrong_labels(y, 10, g))
        trainer.step(x, y, torch.arange(8))
        original_batch(x, y, wrong)
    for layer, p in zip(model.layers, params, strict=True):
        up, down, _ = layer.dims
        w = layer.linear.weight
        assert torch.allclose(w[:, :up], p["Wf"], atol=1e-5)
        assert torch.allclose(w[:, up : up + down], p["Wb"], atol=1e-5)
        assert torch.allclose(w[:, up + down :], p["Wl"], atol=1e-5)
        if bias_init == "torch":
            for mine, theirs in ((layer.linear.bias, p["bf"]), (layer.bias_down, p["bb"]), (layer.bias_lat, p["bl"])):
                assert torch.allclose(mine, theirs, atol=1e-5)


def test_rewsmith_initialisation_and_prediction_window():
    cfg, model, _ = built("rewsmith-recurrent", "model.hidden=[300,200,100]")
    first, top = model.layers[0], model.layers[2]
    up = first.dims[0]
    assert first.linear.weight[:, :up].abs().max() <= math.sqrt(6 / 784)  # kaiming_uniform_(relu)
    assert first.linear.weight[:, up : up + 200].abs().max() <= 0.05  # U(-0.05, 0.05)
    label_block = top.linear.weight[:, 200:210]
    assert label_block.std().item() == pytest.approx(3 * math.sqrt(2 / 10), rel=0.1)  # amplified_initialization
    lateral = first.linear.weight[:, up + 200 :]
    assert torch.allclose(lateral @ lateral.T, 2 * torch.eye(300), atol=1e-3)  # orthogonal, gain sqrt(2)
    assert first.linear.bias is None  # F.linear(x, W) at 8fefe97
    _, with_biases, _ = built("rewsmith-recurrent", "model.hidden=[300,200,100]", "recurrent.bias_init=torch")
    first = with_biases.layers[0]  # nn.Linear's own biases, one per source, since 7e4621a
    assert first.linear.bias.abs().max() <= 1 / math.sqrt(784) and first.bias_down.abs().max() <= 1 / math.sqrt(200)
    assert 0 < first.bias_lat.abs().max() <= 1 / math.sqrt(300)
    # iterations // 2 -+ iterations // 10 of 10, 0-based, after 3 preinitialisation steps: steps 8-10
    assert model.window == (8, 10) and model.learn_window == (4, 13) and model.hidden_steps == 3


# --- Nicola97: recurrent metalayers -------------------------------------------------------------------------------


class NicolaLayer(nn.Linear):
    def forward(self, x):
        x_direction = x / (x.norm(2, 1, keepdim=True) + 1e-4)
        return torch.relu(torch.mm(x_direction, self.weight.T) + self.bias.unsqueeze(0))


class NicolaMetaLayer(nn.Module):
    """recurrent_ff.py's MetaLayer (threshold 5, Adam lr 0.1), with the weights of an fflab metalayer."""

    def __init__(self, units):
        super().__init__()
        self.layer_pre, self.layer_post, self.layer_self = [NicolaLayer(u.in_features, u.out_features) for u in units]
        for mine, theirs in zip((self.layer_pre, self.layer_post, self.layer_self), units, strict=True):
            mine.load_state_dict(theirs.state_dict())
        self.opt = torch.optim.Adam(self.parameters(), lr=0.1)

    def forward(self, x):
        in_self, in_pre, in_post = x
        return 0.7 * (self.layer_pre(in_pre) + self.layer_post(in_post)) + 0.3 * (self.layer_self(in_self))

    def train_(self, x_pos, x_neg):
        g_pos, g_neg = self.forward(x_pos).pow(2).mean(1), self.forward(x_neg).pow(2).mean(1)
        loss = torch.log(1 + torch.exp(torch.cat([-g_pos + 5.0, g_neg - 5.0]))).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return self.forward(x_pos).detach(), self.forward(x_neg).detach()


def test_nicola_metalayer_batch_and_prediction_match_the_original():
    widths = [12, 10, 8]
    cfg, model, trainer = built("nicola-metalayer", "model.hidden=[12,10,8]")
    metas = [NicolaMetaLayer(layer.units) for layer in model.layers]

    def states(n):
        return [torch.zeros(n, w) for w in widths] + [torch.zeros(n, 0)]

    def net_train(x_pos, x_neg):  # Net.train: synchronous steps from copies of the previous states
        nxt_pos, nxt_neg = states(len(x_pos)), states(len(x_pos))
        for _ in range(10):
            sp, sn = copy.deepcopy(nxt_pos), copy.deepcopy(nxt_neg)
            for i, layer in enumerate(metas):
                nxt_pos[i], nxt_neg[i] = layer.train_(
                    (sp[i], sp[i - 1] if i > 0 else x_pos, sp[i + 1]), (sn[i], sn[i - 1] if i > 0 else x_neg, sn[i + 1])
                )

    def net_predict(x):  # Net.predict: the list is not copied, and only step 3's goodness reaches the score
        scores = []
        for label in range(10):
            h, cur = overlay_y_on_x(x, label), states(len(x))
            for _ in range(3):
                for i, layer in enumerate(metas):
                    cur[i] = layer((cur[i], cur[i - 1] if i > 0 else h, cur[i + 1]))
            scores.append(sum(cur[i].pow(2).mean(1) for i in range(3)))
        return torch.stack(scores, 1)

    torch.manual_seed(3)
    x, y = (torch.rand(8, 784) - 0.1307) / 0.3081, torch.randint(0, 10, (8,))
    for _ in range(2):
        wrong = drawn_with(trainer, lambda g: permuted_labels(y, g))
        trainer.step(x, y, torch.arange(8))
        net_train(overlay_y_on_x(x, y), overlay_y_on_x(x, wrong))
    for mine, theirs in zip(model.layers, metas, strict=True):
        for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(model.label_scores(x).sum(2), net_predict(x), atol=1e-4)
    assert model.layers[2].dims[1] == 0, "no label at the top: the post input of the last MetaLayer is empty"


# --- Nicola97: spiking metalayers ---------------------------------------------------------------------------------


class FastSigmoid(torch.autograd.Function):
    """snntorch's surrogate.fast_sigmoid(slope=25): Heaviside forward, 1 / (25 |x| + 1)^2 backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / (25 * x.abs() + 1.0) ** 2


def leaky(current, mem, beta=0.65, threshold=1.0):
    """snntorch.Leaky(beta, spike_grad=fast_sigmoid()) as FF_ricorrente_spike.py uses it (reset_delay, subtract):
    a membrane of another shape, or none, restarts at zero."""
    if mem is None or mem.shape != current.shape:
        mem = torch.zeros_like(current)
    reset = FastSigmoid.apply(mem - threshold).detach()
    mem = beta * mem + current - reset * threshold
    return FastSigmoid.apply(mem - threshold), mem


def test_spiking_populations_gradient_equals_backpropagation_through_the_membrane_history():
    """MetaLayer.train runs its populations K times on fixed inputs and backpropagates each iteration's loss through
    every earlier membrane (retain_graph): the preset's layer gets the same gradient from detached membranes."""
    torch.manual_seed(4)
    layer = RecurrentLayer(
        6, 4, 5, wiring="populations", spiking=(1.0, "fast_sigmoid", 25.0), beta=0.65, bias_init="torch",
        inits=("torch", "torch", "torch"), loss="squared_distance", theta=80.0, goodness="mean_activity",
    )  # fmt: skip
    u = [torch.rand(3, 6) * 3, torch.rand(3, 4) * 3, torch.rand(3, 5) * 3]
    for k in (1, 2, 3, 6):
        mems = [None] * 3
        for _ in range(k):
            spikes = []
            for j, unit in enumerate(layer.units):
                s, mems[j] = leaky(unit(u[j]), mems[j])
                spikes.append(s)
        out = 0.7 * (spikes[0] + spikes[1]) + 0.3 * spikes[2]
        expected = torch.autograd.grad(((out - 80) ** 2).mean(), list(layer.parameters()))
        mem = None
        for i in range(1, k + 1):
            mine, mem = layer.populations(u[0], u[1], u[2], None, mem, i)
        assert torch.equal(mine, out)
        got = torch.autograd.grad(((mine - 80) ** 2).mean(), list(layer.parameters()))
        for a, b in zip(got, expected, strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_nicola_spiking_batch_and_prediction_match_the_original():
    """One batch (3 steps, one iteration each, SGD so that no near-zero gradient is magnified) and the prediction
    (one iteration from rest per step, score 2 r(step 2) + r(step 3)) equal FF_ricorrente_spike.py's."""
    widths = [12, 10, 8]
    sets = ["model.hidden=[12,10,8]", "recurrent.updates_per_step=1", "train.optimizer=sgd", "train.lr=0.5"]
    cfg, model, trainer = built("nicola-spiking-metalayer", *sets, "train.momentum=0.0")
    metas = []
    for layer in model.layers:
        units = [nn.Linear(u.in_features, u.out_features) for u in layer.units]
        for mine, theirs in zip(units, layer.units, strict=True):
            mine.load_state_dict(theirs.state_dict())
        metas.append(units)
    opts = [torch.optim.SGD([p for u in units for p in u.parameters()], lr=0.5) for units in metas]

    def meta_forward(units, x):
        in_self, in_pre, in_post = x
        s_pre, _ = leaky(units[0](in_pre), None)
        s_post, _ = leaky(units[1](in_post), None)
        s_self, _ = leaky(units[2](in_self), None)
        return 0.7 * (s_pre + s_post) + 0.3 * s_self

    def states(n):
        return [torch.zeros(n, w) for w in widths] + [torch.zeros(n, 0)]

    def net_train(x_pos, x_neg):
        nxt_pos, nxt_neg = states(len(x_pos)), states(len(x_pos))
        for _ in range(3):
            sp, sn = copy.deepcopy(nxt_pos), copy.deepcopy(nxt_neg)
            for i, units in enumerate(metas):
                s_pos = meta_forward(units, (sp[i], sp[i - 1] if i > 0 else x_pos, sp[i + 1]))
                s_neg = meta_forward(units, (sn[i], sn[i - 1] if i > 0 else x_neg, sn[i + 1]))
                loss = torch.mean((s_pos - 80.0) ** 2) - torch.mean((s_neg - 80.0) ** 2)
                opts[i].zero_grad()
                loss.backward()
                opts[i].step()
                nxt_pos[i], nxt_neg[i] = s_pos.detach(), s_neg.detach()

    def net_predict(x):
        out = []
        for label in range(10):
            h, nxt, totals, rates = overlay_y_on_x(x, label), states(len(x)), [], [0.0] * 3
            for time in range(3):
                cur = nxt.copy()
                for i, units in enumerate(metas):
                    nxt[i] = meta_forward(units, (cur[i], cur[i - 1] if i > 0 else h, cur[i + 1]))
                    if time >= 1:
                        rates[i] = rates[i] + nxt[i].mean(1)
                totals.append(sum(rates) if time >= 1 else torch.zeros(len(x)))
            out.append(sum(totals))
        return torch.stack(out, 1)

    torch.manual_seed(5)
    x, y = torch.rand(8, 784), torch.randint(0, 10, (8,))
    wrong = drawn_with(trainer, lambda g: permuted_labels(y, g))
    trainer.step(x, y, torch.arange(8))
    net_train(overlay_y_on_x(x, y), overlay_y_on_x(x, wrong))
    for layer, units in zip(model.layers, metas, strict=True):
        for a, b in zip(layer.parameters(), [p for u in units for p in u.parameters()], strict=True):
            assert torch.allclose(a, b, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(model.label_scores(x).sum(2), net_predict(x), atol=1e-5)


# --- the presets as built -----------------------------------------------------------------------------------------


def test_each_preset_builds_the_original_architecture():
    import fflab.layers.dense as dense

    _, pez, pez_tr = built("pezeshki")
    assert [(layer.in_features, layer.out_features) for layer in pez.layers] == [(784, 500), (500, 500)]
    assert all(layer.input_norm == "length" and layer.activation == "relu" for layer in pez.layers)
    assert pez.predict_layers == [0, 1] and pez.embedding.at_input_max
    assert isinstance(pez_tr.optimizers[0], torch.optim.Adam) and pez_tr.optimizers[0].defaults["lr"] == 0.03
    cfg = preset("pezeshki")
    assert (cfg.train.schedule, cfg.train.epochs, cfg.train.batch_size, cfg.data.train_subset) == (
        "greedy",
        1000,
        50000,
        50000,
    )
    assert (cfg.train.negatives, cfg.train.fixed_negatives, cfg.data.mean, cfg.data.std) == (
        "permuted_with_repeats",
        True,
        0.1307,
        0.3081,
    )

    cfg, loe, loe_tr = built("loewex")
    assert [(layer.in_features, layer.out_features) for layer in loe.layers] == [(784, 1000), (1000, 1000)] * 1 + [
        (1000, 1000)
    ]
    assert all(layer._act is dense.relu_straight_through and layer.theta == 1000.0 for layer in loe.layers)
    assert loe.layers[1].linear.weight.std().item() == pytest.approx(1 / math.sqrt(1000), rel=0.02)
    assert isinstance(loe_tr.optimizers[0], torch.optim.SGD)
    assert loe_tr.optimizers[0].defaults["weight_decay"] == 3e-4 and loe_tr.optimizers[0].defaults["momentum"] == 0.9
    readout_opt = loe_tr.online_readout.optimizer
    assert isinstance(readout_opt, torch.optim.SGD) and readout_opt.defaults["weight_decay"] == 3e-3
    assert loe.readout.layers == [1, 2] and loe.readout.linear.in_features == 2000 and cfg.readout.epochs == 0

    cfg, che, che_tr = built("cheneyx")
    assert [(layer.in_features, layer.out_features) for layer in che.layers] == [(794, 500), (500, 300), (300, 10)]
    assert all(layer.activation == "tanh" and layer.input_norm == "none" for layer in che.layers)
    assert che.predict_layers == [0, 1, 2] and che.layers[0].loss_name == "unbounded"
    assert (cfg.train.batch_size, cfg.train.shuffle, cfg.train.layer_order) == (1, False, "in_turn")
    assert che_tr.optimizers[0].defaults["momentum"] == 0.0

    cfg, rew, rew_tr = built("rewsmith-recurrent")
    assert [layer.dims for layer in rew.layers] == [(784, 2000, 2000), (2000, 2000, 2000), (2000, 10, 2000)]
    assert all(layer.activation == "leaky_relu" and layer.top_down_sign == -1.0 for layer in rew.layers)
    assert rew.layers[0].objective == "inverted" and rew.layers[0].theta == 1.5 and rew.raw_input
    assert isinstance(rew_tr.optimizers[0], torch.optim.RMSprop) and rew_tr.optimizers[0].defaults["lr"] == 5e-5
    assert rew_tr.update_mode == "step" and rew.damping == 0.3

    cfg, nic, nic_tr = built("nicola-metalayer")
    assert [layer.dims for layer in nic.layers] == [(784, 600, 1000), (1000, 200, 600), (600, 0, 200)]
    assert all(layer.wiring == "metalayer" and layer.mix == (0.7, 0.3) for layer in nic.layers)
    assert nic.embedding.at_input_max and nic.source_norm == "length" and nic.damping == 0.0
    assert (nic.learn_window, nic.window, nic.recompute_after_update, nic.predict_order) == (
        (1, 10),
        (3, 3),
        True,
        "in_turn",
    )
    assert isinstance(nic_tr.optimizers[0], torch.optim.Adam) and nic_tr.optimizers[0].defaults["lr"] == 0.1

    cfg, spk, spk_tr = built("nicola-spiking-metalayer")
    assert [layer.dims for layer in spk.layers] == [(784, 250, 500), (500, 50, 250), (250, 0, 50)]
    assert all(layer.wiring == "populations" and layer.beta == 0.65 for layer in spk.layers)
    assert spk.layers[0].spiking == (1.0, "fast_sigmoid", 25.0) and spk.layers[0].loss_name == "squared_distance"
    assert (spk.updates_per_step, spk.window, spk.window_weights, spk.source_norm) == (100, (2, 3), [2.0, 1.0], "none")
    assert spk_tr.optimizers[0].defaults["lr"] == 0.001 and cfg.train.epochs == 1


def test_preset_headers_cite_repository_commit_and_file():
    nicola = ("Nicola97/Spike-Implementation", "c55444d118228f40ded808a688b799e96a48ef93")
    sources = {
        "pezeshki": ("mpezeshki/pytorch_forward_forward", "1c7a2114bbf85a055dfb50bb13f1516534e9f35d", "main.py"),
        "loewex": ("loeweX/Forward-Forward", "da516f094c70a4a92042fbbc7ab33303aa7dbfd9", "src/ff_model.py"),
        "cheneyx": ("CheneyX2000/Forward_Forward_Algorithm", "04b81a83f6ebcaa24ad033c0ddd60c8a1aa61ffc", "FFLayer.py"),
        "rewsmith-recurrent": (
            "and-rewsmith/RecurrentForwardForward",
            "8fefe97fe323ec3253af73ce435df5c6565a1db6",
            "hidden_layer.py",
        ),
        "nicola-metalayer": (*nicola, "recurrent_ff.py"),
        "nicola-spiking-metalayer": (*nicola, "FF_ricorrente_spike.py"),
    }
    for name, needles in sources.items():
        text = (REPO / "configs" / "reference" / f"{name}.toml").read_text()
        header = text.split("\n[", 1)[0]
        assert "not fflab's recipe" in header
        for needle in needles:
            assert needle in header, (name, needle)


def test_default_options_leave_fflab_as_it_was():
    cfg = config_from_dict({})
    t, m, r = cfg.train, cfg.model, cfg.readout
    assert (t.layer_order, t.shuffle, t.fixed_negatives, m.label_at_input_max) == ("together", True, False, False)
    assert (r.online, r.optimizer, r.bias, r.lr_decay, cfg.data.mean, cfg.data.std) == (
        False,
        "adam",
        True,
        "none",
        0,
        1,
    )
    rec = config_from_dict({"model": {"kind": "recurrent"}}).family_settings
    assert (rec.label_at, rec.source_norm, rec.raw_input, rec.bias_init, rec.learn_window) == (
        "top",
        "rms",
        False,
        "zeros",
        [],
    )
    assert (rec.updates_per_step, rec.recompute_after_update, rec.predict_order, rec.window_weights) == (
        1,
        False,
        "synchronous",
        [],
    )


# --- short runs ---------------------------------------------------------------------------------------------------

SHORT = {
    "pezeshki": ["data.train_subset=500", "train.batch_size=500", "train.epochs=20", "train.monitor_every=20"],
    "loewex": ["data.train_subset=500", "train.epochs=2", "model.hidden=[200,200,200]", "model.theta=200.0"],
    "cheneyx": ["data.train_subset=200", "data.test_subset=200", "train.epochs=2"],
    "rewsmith-recurrent": ["data.train_subset=500", "train.epochs=1", "model.hidden=[100,100,100]"],
    "nicola-metalayer": ["data.train_subset=1024", "train.epochs=1", "model.hidden=[100,60,20]"],
    "nicola-spiking-metalayer": ["data.train_subset=256", "train.batch_size=128", "recurrent.updates_per_step=5"],
}


@pytest.mark.slow
@pytest.mark.real_data("mnist")
@pytest.mark.parametrize("name", PRESETS)
def test_short_run_of_each_preset(tmp_path, name):
    common = ["data.test_subset=200", "train.monitor_size=200", "train.threads=1", "eval.train_accuracy=false"]
    if name != "cheneyx":
        common.append("train.checkpoint_every=0")
    cfg = preset(name, *SHORT[name], *[c for c in common if not (name == "cheneyx" and c.startswith("data.test"))])
    summary = train_run(cfg, tmp_path / name, progress=False, log=lambda s: None)
    assert summary["dataset"] == "mnist" and 0.0 <= summary["test_accuracy"] <= 1.0
    if name in ("loewex", "cheneyx"):  # the others learn too slowly to clear chance in a run this short
        assert summary["test_accuracy"] > 0.3, summary["test_accuracy_by_method"]
