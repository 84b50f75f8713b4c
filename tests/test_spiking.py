"""Spiking building blocks: LIF dynamics by hand, surrogate gradients, encoders and traces."""

import pytest
import torch
from repo import shipped_config

from fflab.config import Config
from fflab.spiking import LIF, encode, spike, surrogate_derivative, trace


def test_lif_matches_hand_stepped_example_with_subtractive_reset():
    lif = LIF(beta=0.5, threshold=1.0, reset="subtract")
    currents = torch.tensor([0.6, 0.6, 0.6, 0.0, 1.2]).view(5, 1, 1)
    # mem: 0.6 -> 0.9 -> 1.05 (spike, -1 -> 0.05) -> 0.025 -> 1.2125 (spike)
    spikes = lif.run(currents).flatten().tolist()
    assert spikes == [0.0, 0.0, 1.0, 0.0, 1.0]
    lif.reset_state()
    for c in currents[:3]:
        lif(c)
    assert lif.mem.item() == pytest.approx(0.05, abs=1e-6)


def test_lif_gate_is_the_surrogate_derivative_at_each_steps_potential_before_reset():
    lif = LIF(beta=0.5, threshold=1.0, reset="subtract", surrogate="fast_sigmoid", slope=2.0)
    currents = torch.tensor([0.6, 0.6, 0.6, 0.0, 1.2]).view(5, 1, 1)
    spikes, gate = lif.run_with_gate(currents)
    assert torch.equal(spikes, lif.run(currents))
    mem = torch.tensor([0.6, 0.9, 1.05, 0.025, 1.2125])  # the hand-stepped potentials above, before each reset
    torch.testing.assert_close(gate.flatten(), 1 / (1 + 2.0 * (mem - 1.0).abs()) ** 2)
    assert lif.run_with_gate(currents, gate=False)[1] is None


def test_lif_reset_to_zero_and_state_reset():
    lif = LIF(beta=0.5, threshold=1.0, reset="zero")
    for c in (0.6, 0.6, 0.6):
        lif(torch.tensor([[c]]))
    assert lif.mem.item() == 0.0  # fired at the third step and was reset to zero
    lif.reset_state()
    assert lif.mem is None


def test_lif_rejects_bad_parameters():
    with pytest.raises(ValueError, match="beta"):
        LIF(beta=1.5)
    with pytest.raises(ValueError, match="surrogate"):
        LIF(surrogate="sigmoid-ish")


@pytest.mark.parametrize(
    "name, derivative",
    [
        ("fast_sigmoid", lambda x, k: 1 / (1 + k * x.abs()) ** 2),
        ("atan", lambda x, k: k / 2 / (1 + (torch.pi / 2 * k * x) ** 2)),
        ("straight_through", lambda x, k: torch.ones_like(x)),
    ],
)
def test_spike_is_a_step_forward_and_the_surrogate_backward(name, derivative):
    x = torch.tensor([-1.0, -0.1, 0.05, 2.0], requires_grad=True)
    s = spike(x, name, slope=5.0)
    assert s.tolist() == [0.0, 0.0, 1.0, 1.0]
    s.sum().backward()
    torch.testing.assert_close(x.grad, derivative(x.detach(), 5.0))
    torch.testing.assert_close(surrogate_derivative(x.detach(), name, 5.0), x.grad)  # the rule's gate, no autograd


def test_rate_code_fires_with_the_pixel_probability():
    x = torch.tensor([[0.0, 0.2, 0.5, 1.0]])
    train = encode(x, "rate", 20000, gain=0.8, generator=torch.Generator().manual_seed(0))
    assert set(train.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(train.mean(0), (0.8 * x).clamp(max=1), atol=0.01, rtol=0)


def test_rate_code_is_reproducible_from_a_seed():
    x = torch.rand(3, 10)
    a = encode(x, "rate", 5, generator=torch.Generator().manual_seed(1))
    b = encode(x, "rate", 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_latency_code_fires_once_earlier_for_brighter_inputs_and_rest_steps_are_silent():
    x = torch.tensor([[1.0, 0.5, 0.0]])
    train = encode(x, "latency", 5, rest=2)
    assert train.shape == (7, 1, 3)
    assert train[:, 0, 0].tolist() == [1, 0, 0, 0, 0, 0, 0]  # value 1 at step 0
    assert train[:, 0, 1].tolist() == [0, 0, 1, 0, 0, 0, 0]  # value 0.5 at step round(0.5 * 4) = 2
    assert train[:, 0, 2].sum() == 0  # zeros never fire


def test_direct_code_repeats_the_input_and_rejects_unknown_encoders():
    x = torch.rand(2, 3)
    train = encode(x, "direct", 4)
    assert train.shape == (4, 2, 3) and torch.equal(train[3], x)
    with pytest.raises(ValueError, match="unknown encoder"):
        encode(x, "phase", 4)


def test_traces_follow_their_recurrences():
    spikes = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(4, 1, 1)
    assert trace(spikes, "count").flatten().tolist() == [1, 1, 2, 2]
    leaky = trace(spikes, "leaky", 0.5).flatten()
    torch.testing.assert_close(leaky, torch.tensor([1.0, 0.5, 1.25, 0.625]))
    hard = trace(spikes, "hard_leaky", 0.5).flatten()
    torch.testing.assert_close(hard, torch.tensor([1.0, 0.5, 1.0, 0.5]))


def test_leaky_trace_product_equals_the_stepwise_loop():
    spikes = (torch.rand(24, 5, 7, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    ref, tr = [], torch.zeros(5, 7)
    for s in spikes:
        tr = 0.9 * tr + s
        ref.append(tr)
    torch.testing.assert_close(trace(spikes, "leaky", 0.9), torch.stack(ref))


def spiking_net(**model):
    from fflab.config import ModelSettings, SpikingSettings
    from fflab.models import build_model

    settings = ModelSettings(kind="spiking", hidden=[12, 10], label="concat", **model)
    return build_model(Config(model=settings, spiking=SpikingSettings(encoder="direct", steps=5, slope=0.3)), 20, 4)


def test_spiking_ff_layers_emit_spike_trains_and_score_goodness_from_their_trace():
    net = spiking_net()
    x = torch.rand(6, 20)
    h0, h1 = net.activities(net.embedding.embed(x, torch.zeros(6, dtype=torch.long)))
    assert h0.shape == (6, 5, 12) and h1.shape == (6, 5, 10)
    assert set(h1.unique().tolist()) <= {0.0, 1.0}
    layer = net.layers[1]
    expected = trace(h1.transpose(0, 1), "leaky", 0.9).mean(0).pow(2).mean(1)  # mean square of the mean trace
    torch.testing.assert_close(layer.goodness(h1), expected)


def test_spiking_ff_local_losses_reach_only_their_own_layer():
    torch.manual_seed(0)
    net = spiking_net()
    x = torch.rand(8, 20)
    both = torch.cat([net.embedding.embed(x, torch.zeros(8, dtype=torch.long))] * 2)
    results = net.local_losses(both, n_pos=8)
    grads = torch.autograd.grad(results[1].loss, list(net.layers[0].parameters()), allow_unused=True)
    assert all(g is None for g in grads)  # the upper layer's loss does not reach the lower layer
    own = torch.autograd.grad(results[1].loss, net.layers[1].linear.weight)[0]
    assert own.abs().sum() > 0  # but it does train its own weights through the surrogate


@pytest.mark.slow
def test_spiking_ff_digits_run_learns(tmp_path):
    from fflab.training.run import train_run

    cfg = shipped_config(
        "digits-ff",
        ["model.kind=spiking", "spiking.encoder=direct", "spiking.steps=4", "spiking.slope=0.3", "train.epochs=6"],
    )
    summary = train_run(cfg, tmp_path / "spk", progress=False, log=lambda s: None)
    assert summary["model"] == "spiking" and summary["test_accuracy"] >= 0.8
