"""Recurrent FF (Hinton 2022, Fig. 3): damping, counted window, hidden label, locality, batched prediction."""

import math

import pytest
import torch
from product_count import ProductFlops
from toydata import toy_data

from fflab.config import config_from_dict
from fflab.errors import ConfigError
from fflab.layers.recurrent import RecurrentLayer, rms_normalize
from fflab.models import RecurrentFFNetwork, build_model
from fflab.training.evaluate import evaluate
from fflab.training.trainer import RecurrentTrainer, make_trainer


def tiny_net(
    hidden_steps=0,
    damping=0.3,
    window=(3, 5),
    steps=6,
    wiring="sum",
    layers=(3, 4),
    kind="recurrent",
    spiking=None,
    score="steps",
    clock=False,
):
    torch.manual_seed(0)
    cfg = config_from_dict(
        {
            "model": {"kind": kind, "hidden": list(layers)},
            "recurrent": {
                "steps": steps,
                "damping": damping,
                "window": list(window),
                "hidden_steps": hidden_steps,
                "wiring": wiring,
                "score": score,
                "clock": clock,
            },
            "spiking": spiking or {},
        }
    )
    return build_model(cfg, input_dim=5, num_classes=3)


def test_one_layer_dynamics_match_a_hand_computation():
    """new = d * old + (1 - d) * relu(W [rms(x); rms(label); rms(old)] + b), from a zero state."""
    net = tiny_net(damping=0.3, layers=(2,), window=(1, 3), steps=3)
    layer = net.layers[0]
    w, b = layer.linear.weight.detach(), layer.linear.bias.detach()
    x = torch.tensor([[1.0, 0.0, 2.0, 0.0, 1.0]])
    label = torch.tensor([2])

    def rms(v):
        return v / math.sqrt((v**2).mean().item() + 1e-8) if v.abs().sum() > 0 else v

    u_x = rms(x[0])
    u_label = torch.tensor([0.0, 0.0, math.sqrt(3.0)])  # one-hot of length 3 at unit RMS
    h = torch.zeros(2)
    expected = []
    for _ in range(3):
        computed = torch.relu(w @ torch.cat([u_x, u_label, rms(h)]) + b)
        h = 0.3 * h + 0.7 * computed
        expected.append(h.clone())
    got = net.trace(x, label, keep_activities=True).activities
    for t in range(3):
        assert torch.allclose(got[t][0][0], expected[t], atol=1e-5), t


def test_label_is_invisible_and_undamped_during_hidden_steps():
    net = tiny_net(hidden_steps=2, window=(3, 5))
    x = torch.rand(4, 5)
    a = net.trace(x, torch.tensor([0, 0, 0, 0]), keep_activities=True).activities
    b = net.trace(x, torch.tensor([1, 2, 1, 2]), keep_activities=True).activities
    for t in range(2):
        for j in range(2):
            assert torch.equal(a[t][j], b[t][j]), "the label leaked into a hidden step"
    assert not torch.allclose(a[2][1], b[2][1]), "once clamped, the label must matter"
    # Undamped while hidden: step 1 is exactly the computed activity (not 0.7 of it).
    layer0 = net.layers[0]
    u_top = torch.ones(4, 3)  # neutral label at unit RMS
    computed = layer0(rms_normalize(x), rms_normalize(torch.zeros(4, 4)), torch.zeros(4, 3))
    assert torch.allclose(a[0][0], computed, atol=1e-6)
    neutral = net.label_input(None, 4, 1, "cpu")
    assert torch.equal(neutral, u_top)


def test_window_averages_goodness_over_the_counted_steps():
    net = tiny_net(window=(3, 5), steps=6)
    x, pos, neg = torch.rand(6, 5), torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([1, 2, 0, 1, 2, 0])
    results = net.local_losses(x, pos, neg)
    trace_pos, trace_neg = net.trace(x, pos).goodness, net.trace(x, neg).goodness  # [T, L, rows]
    for j, r in enumerate(results):
        assert torch.allclose(r.goodness[:6], trace_pos[2:5, j].mean(0), atol=1e-5)
        assert torch.allclose(r.goodness[6:], trace_neg[2:5, j].mean(0), atol=1e-5)


def test_window_mean_scores_the_goodness_of_the_window_averaged_spikes():
    """score = "window_mean": goodness of each unit's firing rate over the window, in training and prediction."""
    net = tiny_net(window=(2, 5), steps=6, kind="spiking-recurrent", spiking={"threshold": 0.3}, score="window_mean")
    x, pos, neg = torch.rand(6, 5), torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([1, 2, 0, 1, 2, 0])

    def rates(labels):
        acts = net.trace(x, labels, keep_activities=True).activities  # spikes per step and layer
        return [torch.stack([acts[t][j] for t in range(1, 5)]).mean(0) for j in range(2)]

    pos_rates, neg_rates = rates(pos), rates(neg)
    assert 0 < pos_rates[0].mean() < 1, "units must fire sometimes, not always, for the test to mean anything"
    results = net.local_losses(x, pos, neg)
    for j, (layer, r) in enumerate(zip(net.layers, results, strict=True)):
        expected = layer.goodness(torch.cat([pos_rates[j], neg_rates[j]]))
        assert torch.allclose(r.goodness, expected, atol=1e-6)
        per_step = net.trace(x, pos).goodness[1:5, j].mean(0)  # the "steps" score: mean of per-step goodness
        assert not torch.allclose(r.goodness[:6], per_step), "window mean and per-step scores must differ here"
    scores = net.label_scores(x)
    for c in range(3):
        for j, rate in enumerate(rates(torch.full((6,), c))):
            assert torch.allclose(scores[:, c, j], net.layers[j].goodness(rate), atol=1e-6)
    with pytest.raises(ValueError, match="per-step updates"):
        net.local_losses(x, pos, neg, update=lambda results: None)


@pytest.mark.parametrize("kind", ["recurrent", "spiking-recurrent"])
@pytest.mark.parametrize("wiring", ["sum", "metalayer"])
def test_no_gradient_crosses_layers_or_time_steps(wiring, kind):
    # Spiking units must fire (a silent unit's squared spike has zero gradient): a low threshold.
    net = tiny_net(wiring=wiring, layers=(3, 4, 2), kind=kind, spiking={"threshold": 0.01, "slope": 1.0})
    x, labels = torch.rand(5, 5), torch.randint(0, 3, (5,))
    states = []
    net.run(x, labels, until=4, on_step=lambda t, s: states.append(s))
    for i, (layer, h) in enumerate(zip(net.layers, states[-1], strict=True)):
        loss = layer.goodness(h).sum()
        for j, other in enumerate(net.layers):
            grads = torch.autograd.grad(loss, list(other.parameters()), retain_graph=True, allow_unused=True)
            if j == i:
                assert any(g is not None and g.abs().sum() > 0 for g in grads)
            else:
                assert all(g is None for g in grads), f"layer {i}'s loss reached layer {j}"
    # Through time: restart step 4 from leaf copies of step 3's state (membrane potentials, for spiking
    # layers, which the emitted spikes do not carry), so any path back through time would reach them.
    leaves = [h.detach().requires_grad_() for h in net.run(x, labels, until=3)]
    last = []
    net.run(x, labels, state=leaves, start=4, until=4, on_step=lambda t, s: last.append(s))
    for layer, h in zip(net.layers, last[0], strict=True):
        grads = torch.autograd.grad(layer.goodness(h).sum(), leaves, retain_graph=True, allow_unused=True)
        assert all(g is None for g in grads), "a gradient ran back through time"


@pytest.mark.parametrize(
    ("shape", "clock"), [((4, 5), False), ((4, 5), True), ((4, 3, 5), False)], ids=["static", "clock", "sequence"]
)
@pytest.mark.parametrize("hidden_steps", [0, 2])
def test_batched_label_scores_equal_one_run_per_label(hidden_steps, shape, clock):
    """The batched run repeats each frame per candidate label (never the whole sequence batch)."""
    net = tiny_net(hidden_steps=hidden_steps, clock=clock)
    x = torch.rand(shape)
    scores = net.label_scores(x)
    assert scores.shape == (4, 3, 2)
    for c in range(3):
        g = net.trace(x, torch.full((4,), c)).goodness[2:5].mean(0)  # [L, rows]
        assert torch.allclose(scores[:, c, :], g.t(), atol=1e-5)


def test_sequences_feed_one_frame_per_step_then_zeros():
    net = tiny_net(steps=6, window=(3, 5))
    seq = torch.rand(2, 3, 5)
    assert torch.equal(net.frame(seq, 2), seq[:, 1])
    assert torch.equal(net.frame(seq, 4), torch.zeros(2, 5))
    assert net.label_scores(seq).shape == (2, 3, 2)


def test_inverted_variant_and_negative_top_down_sign():
    torch.manual_seed(0)
    cfg = config_from_dict(
        {
            "model": {"kind": "recurrent", "hidden": [8, 8], "objective": "inverted"},
            "recurrent": {"top_down_sign": -1.0},
        }
    )
    net = build_model(cfg, 5, 3)
    assert all(layer.objective == "inverted" and layer.top_down_sign == -1.0 for layer in net.layers)
    x = torch.rand(3, 5)
    raw = torch.stack([net.trace(x, torch.full((3,), c)).goodness[2:5].mean(0).t() for c in range(3)], 1)
    assert torch.allclose(net.label_scores(x), -raw, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("wiring", "update"), [("sum", "window"), ("metalayer", "step")])
def test_recurrent_training_learns_toy_data_with_dynamic_hard_negatives(wiring, update):
    x, y = toy_data(400, 20, 4)
    cfg = config_from_dict(
        {
            "model": {"kind": "recurrent", "hidden": [32, 32]},
            "recurrent": {"wiring": wiring, "hidden_steps": 1, "steps": 6, "update": update},
            "train": {"epochs": 8, "batch_size": 50, "lr": 3e-3, "negatives": "hard", "hard_scores": "readout"},
            "readout": {"enabled": True, "lr": 0.01},
        }
    )
    torch.manual_seed(0)
    net = build_model(cfg, 20, 4)
    trainer = make_trainer(net, cfg, progress=False)
    assert isinstance(net, RecurrentFFNetwork) and isinstance(trainer, RecurrentTrainer)
    history = trainer.fit(x, y)
    assert all(b < a for a, b in zip(history[0].loss, history[-1].loss, strict=True))
    result = evaluate(net, x, y)
    assert result["accuracy_by_method"]["goodness"] > 0.95 and result["accuracy_by_method"]["readout"] > 0.95
    assert result["accuracy_by_method"]["goodness+readout"] > 0.95


def test_goodness_and_readout_vote_by_summed_log_probabilities():
    model = {"kind": "recurrent", "hidden": [3, 4], "loss": "symba", "alpha": 4.0}
    cfg = config_from_dict({"model": model, "recurrent": {"steps": 6}, "readout": {"enabled": True}})
    torch.manual_seed(0)
    net = build_model(cfg, 5, 3).eval()
    torch.manual_seed(1)
    torch.nn.init.normal_(net.readout.linear.weight, std=0.2)  # a readout as sure as the goodness, so votes differ
    x = torch.rand(40, 5)
    scores = net.label_scores(x).mean(2)  # [N, C]
    logits = net.readout(net.readout_features(x))
    by_hand = []
    for g, z in zip(scores.tolist(), logits.tolist(), strict=True):
        g_log = [4.0 * v - math.log(sum(math.exp(4.0 * u) for u in g)) for v in g]  # alpha = 4 (SymBa)
        z_log = [v - math.log(sum(math.exp(u) for u in z)) for v in z]
        votes = [a + b for a, b in zip(g_log, z_log, strict=True)]
        by_hand.append(votes.index(max(votes)))
    predictions = net.predictions(x)
    assert predictions["goodness+readout"].tolist() == by_hand
    for single in ("goodness", "readout"):  # the vote overrules each method alone somewhere
        assert predictions["goodness+readout"].tolist() != predictions[single].tolist()
    with pytest.raises(ConfigError, match="goodness\\+readout.*readout.enabled"):
        config_from_dict({"model": {"kind": "recurrent"}, "eval": {"predict": "goodness+readout"}})
    with pytest.raises(ConfigError, match="model.kind = 'recurrent'"):
        config_from_dict({"readout": {"enabled": True}, "eval": {"predict": "goodness+readout"}})


def test_metalayer_mixes_three_units():
    torch.manual_seed(0)
    layer = RecurrentLayer(5, 3, 4, wiring="metalayer", mix=(0.7, 0.3))
    up, down, lat = torch.rand(2, 5), torch.rand(2, 3), torch.rand(2, 4)
    units = layer.units
    expected = 0.7 * (torch.relu(units[0](up)) + torch.relu(units[1](down))) + 0.3 * torch.relu(units[2](lat))
    assert torch.allclose(layer(up, down, lat), expected)


def test_orthogonal_lateral_init_and_bad_recurrent_configs():
    layer = RecurrentLayer(6, 3, 8, inits=("kaiming", "kaiming", "orthogonal"), activation="tanh")
    lateral = layer._blocks(layer.linear.weight)[2].detach()
    gain = 5 / 3
    assert torch.allclose(lateral @ lateral.t(), gain**2 * torch.eye(8), atol=1e-4)
    for recurrent, message in [
        ({"window": [4, 9]}, "recurrent.window"),
        ({"hidden_steps": 3, "window": [3, 5]}, "recurrent.hidden_steps"),
        ({"source_init": ["kaiming", "magic", "orthogonal"]}, "recurrent.source_init"),
    ]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"model": {"kind": "recurrent"}, "recurrent": recurrent})
    with pytest.raises(ConfigError, match="window_mean.*recurrent.update"):
        config_from_dict({"model": {"kind": "recurrent"}, "recurrent": {"score": "window_mean", "update": "step"}})
    with pytest.raises(ConfigError, match="hard_scores"):
        config_from_dict({"model": {"kind": "recurrent"}, "train": {"negatives": "hard"}})


def test_clock_appends_a_one_hot_step_code_to_each_frame():
    torch.manual_seed(0)
    cfg = config_from_dict(
        {"model": {"kind": "recurrent", "hidden": [6, 4]}, "recurrent": {"steps": 5, "window": [2, 4], "clock": True}}
    )
    net = build_model(cfg, input_dim=3, num_classes=2)
    assert net.layers[0].dims[0] == 3 + 5
    seq = torch.rand(2, 4, 3)
    framed = net.frame(seq, 2)
    assert torch.equal(framed[:, :3], seq[:, 1]) and torch.equal(framed[:, 3:], torch.eye(5)[1].expand(2, 5))
    assert torch.equal(net.frame(seq, 5)[:, :3], torch.zeros(2, 3))  # the sequence ran out; the clock goes on
    assert net.static_up(torch.rand(2, 3)) is None  # a clocked input changes every step
    scores = net.label_scores(seq)
    for c in range(2):
        g = net.trace(seq, torch.full((2,), c)).goodness[1:4].mean(0)
        assert torch.allclose(scores[:, c, :], g.t(), atol=1e-5)


def test_spiking_recurrent_layer_integrates_leaks_fires_and_resets_by_hand():
    """mem = d * settle(mem) + (1 - d) * (W [rms(x); rms(label); rms(spikes)] + b); spikes = H(mem - 1);
    settle subtracts the threshold where a unit fired."""
    net = tiny_net(damping=0.5, layers=(3,), window=(1, 4), steps=4, kind="spiking-recurrent")
    layer = net.layers[0]
    with torch.no_grad():
        layer.linear.weight.mul_(4.0)  # make it fire
    w, b = layer.linear.weight.detach(), layer.linear.bias.detach()
    x, label = torch.tensor([[1.0, 0.0, 2.0, 0.0, 1.0]]), torch.tensor([1])

    def rms(v):
        return v / math.sqrt((v**2).mean().item() + 1e-8) if v.abs().sum() > 0 else v

    u_x, u_label = rms(x[0]), torch.tensor([0.0, math.sqrt(3.0), 0.0])
    mem, spikes, expected = torch.zeros(3), torch.zeros(3), []
    for _ in range(4):
        current = w @ torch.cat([u_x, u_label, rms(spikes)]) + b
        mem = 0.5 * (mem - (mem > 1).float()) + 0.5 * current
        spikes = (mem > 1).float()
        expected.append(spikes)
    got = net.trace(x, label, keep_activities=True).activities
    assert torch.stack(expected).sum() > 0
    for t in range(4):
        assert torch.equal(got[t][0][0], expected[t]), t


# Goodness accuracy measured when written: 78.8% per-step score (layer 0 alone 94.2%), 100% with the window mean and
# the sharp alpha of configs/mnist-spiking-recurrent.toml; readout 100% in both; chance is 25%.
@pytest.mark.slow
@pytest.mark.parametrize("score, alpha, slope, bar", [("steps", 4.0, 0.3, 0.7), ("window_mean", 40.0, 1.0, 0.95)])
def test_spiking_recurrent_training_learns_toy_data(score, alpha, slope, bar):
    x, y = toy_data(400, 20, 4)
    cfg = config_from_dict(
        {
            "model": {"kind": "spiking-recurrent", "hidden": [64, 64], "loss": "symba", "alpha": alpha},
            "recurrent": {"wiring": "metalayer", "steps": 6, "damping": 0.5, "window": [3, 6], "score": score},
            "spiking": {"slope": slope, "threshold": 0.5},
            "train": {"epochs": 10, "batch_size": 50, "lr": 3e-3, "negatives": "hard", "hard_scores": "readout"},
            "readout": {"enabled": True, "lr": 0.01},
        }
    )
    torch.manual_seed(0)
    net = build_model(cfg, 20, 4)
    make_trainer(net, cfg, progress=False).fit(x, y)
    result = evaluate(net, x, y)
    assert result["accuracy_by_method"]["goodness"] > bar and result["accuracy_by_method"]["readout"] > 0.95, result


# --- recurrent wiring over locally connected maps (Hinton's CIFAR-10 nets) -----------------------------------


def local_net(hidden=(2, 2), kernel=3, shape=(1, 8, 8), kind="recurrent", **recurrent):
    torch.manual_seed(0)
    settings = {"kind": kind, "architecture": "local", "hidden": list(hidden), "kernel": kernel}
    recurrent = {"source_init": ["kaiming", "kaiming", "kaiming"], **recurrent}
    cfg = config_from_dict({"model": settings, "recurrent": recurrent})
    return build_model(cfg, math.prod(shape), 4, input_shape=shape)


@pytest.mark.parametrize("wiring", ["sum", "metalayer"])
def test_local_recurrent_units_see_only_their_receptive_fields(wiring):
    net = local_net(hidden=(2, 3), kernel=3, wiring=wiring)
    low, top = net.layers
    assert low.dims == (64, 3 * 64, 2 * 64) and top.dims == (2 * 64, 4, 3 * 64)
    up, down, lateral = low.source_weights()
    label = top.source_weights()[1]
    # unit (channel 1, row 4, col 4) of the lower map sees rows and columns 3-5 of the image and both maps
    unit = 1 * 64 + 4 * 8 + 4
    field = torch.zeros(8, 8, dtype=torch.bool)
    field[3:6, 3:6] = True
    assert torch.equal(up[unit] != 0, field.flatten())
    assert torch.equal(down[unit].view(3, 8, 8) != 0, field.expand(3, 8, 8))
    assert torch.equal(lateral[unit].view(2, 8, 8) != 0, field.expand(2, 8, 8))
    assert (label != 0).all()  # the label reaches every top unit
    # a unit's computed activity ignores a pixel of the map above outside its field
    u_up, u_down, u_lat = torch.rand(2, 64), torch.rand(2, 3 * 64), torch.rand(2, 2 * 64)
    base = low(u_up, u_down, u_lat)
    u_down[:, 0] += 5.0  # channel 0, row 0, col 0 of the map above
    moved = (low(u_up, u_down, u_lat) - base).abs().amax(0).view(2, 8, 8) > 0
    assert moved[:, :2, :2].any() and not moved[:, 2:, :].any() and not moved[:, :, 2:].any()


def test_without_lateral_a_layer_sees_only_the_maps_below_and_above():
    net = local_net(hidden=(2, 3), kernel=3, lateral=False)
    low = net.layers[0]
    assert low.dims == (64, 3 * 64, 0) and low.rest.dense_shape == (128, 192)
    u_up, u_down = torch.rand(2, 64), torch.rand(2, 3 * 64)
    assert torch.equal(low(u_up, u_down, torch.rand(2, 128)), low(u_up, u_down, torch.zeros(2, 128)))
    x = torch.rand(3, 1, 8, 8)
    scores = net.label_scores(x)
    for c in range(4):  # the batched prediction still equals one run per label
        assert torch.allclose(scores[:, c], net.trace(x, torch.full((3,), c)).goodness[2:5].mean(0).t(), atol=1e-5)
    with pytest.raises(ConfigError, match="recurrent.lateral"):
        config_from_dict({"model": {"kind": "recurrent"}, "recurrent": {"wiring": "metalayer", "lateral": False}})


def test_local_masks_survive_loading_a_state_and_scale_xavier_by_the_fields():
    net = local_net(hidden=(2, 2), kernel=3)
    layer = net.layers[0]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["layers.0.up.weight"].fill_(1.0)  # a state with weights outside the fields
    net.load_state_dict(state)
    assert torch.equal(layer.up.weight != 0, layer.up.mask)
    # Xavier scales by the fields: an image pixel reaches 2 channels x 3x3 units, a unit sees 3x3 pixels
    xavier = local_net(hidden=(2, 2), kernel=3, source_init=["xavier"] * 3).layers[0]
    up = xavier.source_weights()[0].detach()
    bound = math.sqrt(2) * math.sqrt(6 / (9 + 18))  # ReLU gain
    assert bound * 0.9 < up.abs().max() <= bound


def test_spiking_recurrent_layers_take_local_fields_too():
    net = local_net(hidden=(2, 2), kernel=3, kind="spiking-recurrent")
    low = net.layers[0]
    assert low.spiking is not None and all(torch.equal(p.weight != 0, p.mask) for p in (low.up, low.rest))
    assert net.label_scores(torch.rand(3, 1, 8, 8)).shape == (3, 4, 2)


@pytest.mark.slow
def test_local_recurrent_training_learns_images_and_keeps_its_wiring():
    # 4 classes: which quadrant of an 8x8 image is bright, under noise
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (400,), generator=gen)
    x = 0.3 * torch.rand(400, 1, 8, 8, generator=gen)
    for c in range(4):
        r, q = divmod(c, 2)
        x[y == c, :, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 1.0
    net = local_net(hidden=(2, 2), kernel=3, steps=5, window=[3, 5])
    zero = [torch.cat(layer.source_weights(), 1).detach() == 0 for layer in net.layers]
    cfg = config_from_dict({"model": {"kind": "recurrent"}, "train": {"epochs": 6, "batch_size": 50, "lr": 3e-3}})
    make_trainer(net, cfg, progress=False).fit(x, y)
    assert evaluate(net, x, y)["accuracy_by_method"]["goodness"] > 0.95
    for layer, was_zero in zip(net.layers, zero, strict=True):
        weight = torch.cat(layer.source_weights(), 1).detach()
        assert (weight[was_zero] == 0).all(), "a weight outside the receptive fields moved"
        assert (weight[~was_zero] != 0).float().mean() > 0.99


def test_bad_local_recurrent_configs_are_named():
    base = {"kind": "recurrent", "architecture": "local", "hidden": [3, 3]}
    rec = {"source_init": ["kaiming"] * 3}
    for model, recurrent, message in [
        ({"stride": 2}, {}, "model.stride"),
        ({"pool": [2, 1]}, {}, "model.pool"),
        ({}, {"clock": True}, "recurrent.clock"),
        ({"label": "pattern"}, {}, "model.label"),
        ({"padding": "valid"}, {}, "model.padding"),
        ({"batch_norm": True}, {}, "model.batch_norm"),
        ({"dropout": 0.2}, {}, "model.dropout"),
        ({"goodness_scope": "position"}, {}, "model.goodness_scope"),
        ({"input_norm": "group"}, {}, "model.input_norm"),
        ({}, {"source_init": ["kaiming", "kaiming", "orthogonal"]}, "recurrent.source_init"),
    ]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"model": {**base, **model}, "recurrent": {**rec, **recurrent}})
    with pytest.raises(ConfigError, match="needs images"):
        config_from_dict({"model": base, "recurrent": rec, "data": {"name": "seq-mnist"}})
    with pytest.raises(ConfigError, match="model.kind 'recurrent' builds 'dense' or 'local' layers"):
        config_from_dict({"model": {**base, "architecture": "conv"}, "recurrent": rec})
    cfg = config_from_dict({"model": {**base, "hidden": [16, 16]}, "recurrent": rec})
    with pytest.raises(ConfigError, match="over the limit"):
        build_model(cfg, 3072, 10, input_shape=(3, 32, 32))
    with pytest.raises(ConfigError, match="needs images"):
        build_model(config_from_dict({"model": base, "recurrent": rec}), 784, 10, input_shape=None)


@pytest.mark.parametrize(
    "recurrent",
    [
        {"update": "window"},
        {"update": "window", "learn_window": [2, 5]},
        {"update": "step", "learn_window": [2, 6]},  # per-step learning past the counted window (and-rewsmith)
        {"update": "step", "updates_per_step": 3, "recompute_after_update": True},
    ],
)
@pytest.mark.parametrize("readout", [False, True])
def test_flops_per_sample_counts_the_products_a_training_step_runs(recurrent, readout):
    """The count behind samples/s' GFLOP/s and the share of the matmul peak, against torch's own count of one step."""
    x, y = toy_data(40, 20, 4)
    train = {"batch_size": 40, "negatives": "hard" if readout else "random"}
    cfg = config_from_dict(
        {
            "model": {"kind": "recurrent", "hidden": [16, 12]},
            "recurrent": {"hidden_steps": 1, "steps": 6, "window": [3, 4], **recurrent},
            "train": {**train, "hard_scores": "readout"} if readout else train,
            "readout": {"enabled": readout},
        }
    )
    net = build_model(cfg, 20, 4)
    trainer = make_trainer(net, cfg, progress=False)
    with ProductFlops() as counted:
        trainer.step(x, y)
    assert trainer.flops_per_sample() * len(x) == counted.flops


@pytest.mark.parametrize(
    "recurrent",
    [
        {"update": "window", "raw_input": True},
        {"update": "step", "learn_window": [4, 6]},  # one update per step (and-rewsmith), step 3 shows the label
    ],
)
def test_label_hidden_steps_run_once_for_both_halves_and_train_as_two_runs_would(recurrent, monkeypatch):
    """Before the label shows, a positive and a negative row see the same input: the step runs them once. The
    weights after a training step equal those of running both halves from the first step (the method before)."""
    x, y = toy_data(24, 20, 4)
    cfg = config_from_dict(
        {
            "model": {"kind": "recurrent", "hidden": [16, 12]},
            "recurrent": {"hidden_steps": 2, "steps": 6, "window": [3, 5], **recurrent},
            "train": {"batch_size": 24, "negatives": "random"},
        }
    )
    weights = []
    for shared in (True, False):
        torch.manual_seed(0)
        net = build_model(cfg, 20, 4)
        assert net.shared_hidden_steps() == 2
        if not shared:
            monkeypatch.setattr(net, "shared_hidden_steps", lambda: 0)
        trainer = make_trainer(net, cfg, progress=False)
        before = [p.detach().clone() for p in net.parameters()]
        trainer.step(x, y)
        weights.append([p.detach().clone() for p in net.parameters()])
        assert not all(torch.equal(a, b) for a, b in zip(before, weights[-1], strict=True))  # the step learned
    for a, b in zip(*weights, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
