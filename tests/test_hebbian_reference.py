"""The Hebbian_FFA reference presets (configs/reference/hebbian-ffa-*.toml) against the original's own code.

The classes below are transcribed from erikberter/Hebbian_FFA, training.ipynb, at commit
a8821aa0c4a8d4fb00e39233d4fb5625bba5efea (cells "Output Traces", the probability classes, "Spiking Layer" and
"Spiking Training Process"), with their names prefixed by Notebook; only the batch and the unused extras
(histories, get_derivative) are left out. fflab's layer, started from the same weights and fed the same spikes,
must end with the same weights.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from repo import REPO, config_path

from fflab.config import load_config
from fflab.layers.hebbian import HebbianFFLayer
from fflab.models import build_model
from fflab.models.hebbian import bernoulli_codes
from fflab.spiking import trace
from fflab.training.run import train_run
from fflab.training.trainer import make_trainer

NOTEBOOK_STEPS, NOTEBOOK_LEARN_AFTER, NOTEBOOK_REST = 23, 15, 20  # range(num_steps - 1), `if t > 15`, range(20)


class NotebookLITrace:  # LI_Trace
    def __init__(self, batch_size, num_neurons, trace_tau=0.85):
        self.out_trace = torch.zeros(batch_size, num_neurons)
        self.tau = trace_tau

    def update_trace(self, spike):
        self.out_trace = self.out_trace * self.tau + (1 - self.tau) * spike

    def reset_trace(self):
        self.out_trace = torch.zeros_like(self.out_trace)


class NotebookReLUTrace:  # ReLU_Trace
    def __init__(self, batch_size, num_neurons, factor=10):
        self.out_trace = torch.zeros(batch_size, num_neurons)
        self.factor = factor

    def update_trace(self, spike):
        self.out_trace = self.out_trace + spike / self.factor

    def reset_trace(self):
        self.out_trace = torch.zeros_like(self.out_trace)


class NotebookStandardProbability:  # Standard_Probability
    def __init__(self, num_inputs, num_neurons, theta=1, scale_factor=6, use_et=True, nu=0.1, tau=0.01):
        self.scale_factor, self.theta, self.use_et, self.nu, self.tau = scale_factor, theta, use_et, nu, tau
        self.elasticity_trace = torch.zeros(num_inputs, num_neurons)

    def compute_neuromodulation(self, out_trace):
        trace_norm = torch.norm(out_trace, dim=1).pow(2)
        return torch.sigmoid(self.scale_factor * (trace_norm - self.theta))

    def compute_probs(self, out_trace):
        return self.compute_neuromodulation(out_trace)

    def hebbian_update(self, weights, x, out_trace, real_positivity):
        delta_weights = x.squeeze(2).unsqueeze(2) @ out_trace.unsqueeze(1)
        neuron_positivity = self.compute_neuromodulation(out_trace)
        factor = (1 - real_positivity - neuron_positivity).unsqueeze(1).unsqueeze(2)
        if self.use_et:
            self.elasticity_trace *= 1 - self.tau
            self.elasticity_trace += self.tau * (factor * delta_weights).mean(dim=0)
            weights += self.nu * self.elasticity_trace
        else:
            weights += self.nu * (factor * delta_weights).mean(dim=0)
        return weights


class NotebookSymmetricProbability:  # Symmetric_Probability
    def __init__(self, num_inputs, num_neurons, use_et=True, nu=0.1, tau=0.01):
        self.use_et, self.num_neurons, self.nu, self.tau = use_et, num_neurons, nu, tau
        self.elasticity_trace = torch.zeros(num_inputs, num_neurons)

    def compute_neuromodulation(self, out_trace, positivity):
        trace_norm_positive = torch.norm(out_trace[:, : self.num_neurons // 2], dim=1).pow(2)
        trace_norm_negative = torch.norm(out_trace[:, self.num_neurons // 2 :], dim=1).pow(2)
        trace_ratio = (trace_norm_negative + 0.01) / (trace_norm_positive + 0.01)
        trace_sum = 1 / (trace_norm_positive + trace_norm_negative + 0.01)
        trace_ratio = trace_ratio ** (1 - 2 * positivity)
        return (trace_ratio * trace_sum, -1 * trace_sum)

    def compute_probs(self, out_trace):
        trace_norm_positive = torch.norm(out_trace[:, : self.num_neurons // 2], dim=1).pow(2)
        trace_norm_negative = torch.norm(out_trace[:, self.num_neurons // 2 :], dim=1).pow(2)
        return (trace_norm_positive + 0.01) / (trace_norm_positive + trace_norm_negative + 0.02)

    def hebbian_update(self, weights, x, out_trace, real_positivity):
        delta_weights = x.squeeze(2).unsqueeze(2) @ out_trace.unsqueeze(1)
        pos_part, neg_part = self.compute_neuromodulation(out_trace, real_positivity)
        rewards = (1 - real_positivity) * pos_part + real_positivity * neg_part
        delta_weights[:, :, : self.num_neurons // 2] *= rewards.unsqueeze(1).unsqueeze(2)
        rewards = (1 - real_positivity) * neg_part + real_positivity * pos_part
        delta_weights[:, :, self.num_neurons // 2 :] *= rewards.unsqueeze(1).unsqueeze(2)
        if self.use_et:
            self.elasticity_trace *= 1 - self.tau
            self.elasticity_trace += self.tau * (delta_weights).mean(dim=0)
            weights += self.nu * self.elasticity_trace.detach().clone()
        else:
            weights += self.nu * (delta_weights).mean(dim=0)
        return weights


class NotebookLIFLayer:  # LIF_Layer (its weights [num_inputs, num_neurons], fflab's transposed)
    def __init__(self, batch_size, num_inputs, num_neurons, threshold=2, tau=0.85, topk=10):
        self.num_neurons, self.topk, self.tau = num_neurons, topk, tau
        self.weights = torch.randn(num_inputs, num_neurons)
        self.membrane_potential = torch.zeros(batch_size, num_neurons)
        self.threshold = torch.ones(batch_size, num_neurons) * threshold

    def __call__(self, x):
        self.membrane_potential = self.membrane_potential * self.tau + x.squeeze(2) @ self.weights
        differential_membrane = self.membrane_potential - self.threshold + 0.01 * torch.randn(self.num_neurons)
        topk, indices = torch.topk(differential_membrane, self.topk, dim=1)
        possible_membrane_potential = self.membrane_potential * (differential_membrane > topk[..., -1, None] - 0.001)
        self.spike = possible_membrane_potential > 0.001
        self.membrane_potential[self.spike] = 0
        self.out_trace.update_trace(self.spike)
        return self.spike.float()

    def hebbian_update(self, x, real_positivity):
        self.weights = self.probabilities.hebbian_update(self.weights, x, self.out_trace.out_trace, real_positivity)


def notebook_train_sample(layer, enc_x, y_positivity, steps=NOTEBOOK_STEPS, learn_after=NOTEBOOK_LEARN_AFTER):
    """One sample of the notebook's train_network: `steps` steps learning after step `learn_after`, P, 20 rest
    steps, trace reset (enc_x [N, D, steps], y_positivity 1 for a negative sample)."""
    for t in range(steps):
        enc_x_t = enc_x[:, :, t].reshape((enc_x.shape[0], enc_x.shape[1], 1))
        layer.spikes_seen = getattr(layer, "spikes_seen", 0) + int(layer(enc_x_t).sum())  # (counted for the test)
        if t > learn_after:
            layer.hebbian_update(enc_x_t, y_positivity)
    probs = layer.probabilities.compute_probs(layer.out_trace.out_trace)
    for _ in range(NOTEBOOK_REST):
        layer(torch.zeros_like(enc_x_t))
    layer.out_trace.reset_trace()
    return probs


def reference_model(name: str, inputs: int, units: int, classes: int = 3, **overrides):
    """The preset's network for `inputs` image values and `classes` labels (code bits: hebbian.code_bits)."""
    sets = [f"{k}={v}" for k, v in overrides.items()]
    cfg = load_config(config_path(f"reference/{name}"), [f"model.hidden=[{units}]", *sets])
    return build_model(cfg, inputs, classes), cfg


def notebook_twin(model, probability):
    """A NotebookLIFLayer with `model`'s first layer's weights, every unit allowed to fire (topk = all)."""
    layer = model.layers[0]
    twin = NotebookLIFLayer(1, layer.in_features, layer.out_features, topk=layer.out_features)
    twin.weights = layer.weight.t().clone()
    twin.out_trace = NotebookLITrace(1, layer.out_features)
    twin.probabilities = probability
    return twin


@pytest.mark.parametrize("preset", ["hebbian-ffa-online", "hebbian-ffa-sigmoid"])
def test_online_presets_learn_sample_by_sample_as_the_notebook_does(preset):
    """Five samples, positive and negative, through the notebook's training loop and through fflab's: the same
    spikes in, the same weights, eligibility trace and P out (the membrane carried from sample to sample)."""
    torch.manual_seed(0)
    model, cfg = reference_model(preset, 8, 6, **{"hebbian.code_bits": 4})
    layer, h = model.layers[0], cfg.family_settings
    assert h.eligibility_tau == 0.1 and cfg.train.batch_size == 1  # config_3 and config_4: tau=0.1, batch_size 1
    layer.weight.mul_(0.6)  # a milder start than N(0, 1) on 12 inputs, so that units both fire and stay silent
    if preset == "hebbian-ffa-sigmoid":  # nu = lr * 2 * scale: fflab's factor is the gradient's, 2 s (target - P)
        probability = NotebookStandardProbability(12, 6, nu=cfg.train.lr * 12, tau=h.eligibility_tau)
        assert probability.nu == pytest.approx(1.0) and (cfg.model.theta, h.scale) == (1.0, 6.0)
    else:  # nu = lr * 2
        probability = NotebookSymmetricProbability(12, 6, nu=cfg.train.lr * 2, tau=h.eligibility_tau)
        assert probability.nu == 1.0
    twin = notebook_twin(model, probability)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(5, 8)
    labels, target = torch.tensor([0, 1, 2, 2, 0]), torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    for i in range(5):
        state = gen.get_state()
        result = model.learn(x[i : i + 1], labels[i : i + 1], target[i : i + 1], cfg.train.lr, gen)
        gen.set_state(state)
        train = model.input_train(x[i : i + 1], labels[i : i + 1], gen)  # the same spikes [T, 1, 12]
        probs = notebook_train_sample(twin, train.permute(1, 2, 0), 1 - target[i : i + 1].long())
        torch.testing.assert_close(result[0].goodness, probs, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.weight, twin.weights.t(), rtol=1e-5, atol=1e-5)
    assert 0 < twin.spikes_seen < 5 * 23 * 6  # units both fired and stayed silent
    assert layer.carried is not None and (layer.carried != 0).any()  # the membrane carried to the next sample
    gain = 2 * (h.scale if preset == "hebbian-ffa-sigmoid" else 1)  # fflab's E is the notebook's times the gain
    torch.testing.assert_close(layer.eligibility, gain * probability.elasticity_trace.t(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", ["config_1", "config_2"])
def test_the_notebooks_batched_runs_are_the_presets_with_a_few_settings(config):
    """config_1 (P_sym, ReLU_Trace(factor=10), nu=1, batch 50): the count trace is 10 times the notebook's, so
    G is 100 times, and sym_eps = 1 and lr = 5 give the same P and the same update. config_2 (sigmoid,
    LI_Trace, nu=10, batch 50): lr = 10 / 12. A batch of 3 here, two batches, the membrane carried per slot."""
    torch.manual_seed(0)
    if config == "config_1":
        sets = {"spiking.trace": "count", "hebbian.sym_eps": 1.0, "train.lr": 5.0, "train.batch_size": 50}
        model, cfg = reference_model("hebbian-ffa-online", 8, 6, **{"hebbian.code_bits": 4}, **sets)
        probability, out_trace = NotebookSymmetricProbability(12, 6, nu=1, tau=0.1), NotebookReLUTrace(3, 6)
    else:
        sets = {"train.lr": 10 / 12, "train.batch_size": 50}
        model, cfg = reference_model("hebbian-ffa-sigmoid", 8, 6, **{"hebbian.code_bits": 4}, **sets)
        probability, out_trace = NotebookStandardProbability(12, 6, nu=10, tau=0.1), NotebookLITrace(3, 6)
    layer = model.layers[0]
    layer.weight.mul_(0.6)
    twin = NotebookLIFLayer(3, 12, 6, topk=6)
    twin.weights, twin.out_trace, twin.probabilities = layer.weight.t().clone(), out_trace, probability
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        x, labels, target = torch.rand(3, 8), torch.tensor([0, 1, 2]), torch.tensor([1.0, 0.0, 1.0])
        state = gen.get_state()
        result = model.learn(x, labels, target, cfg.train.lr, gen)
        gen.set_state(state)
        train = model.input_train(x, labels, gen)
        probs = notebook_train_sample(twin, train.permute(1, 2, 0), 1 - target.long())
        torch.testing.assert_close(result[0].goodness, probs, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.weight, twin.weights.t(), rtol=1e-4, atol=1e-5)
    assert 0 < twin.spikes_seen


def test_symmetric_update_of_a_4_unit_layer_is_the_notebooks_expression():
    """One step, one positive and one negative sample: fflab's update (notebook rule) is twice
    Symmetric_Probability.hebbian_update's dW (fflab keeps the gradient's 2, the preset halves lr), and the
    gradient rule is the same times (G+ + G- + eps) / (G+ + G- + 2 eps)."""
    post = torch.tensor([[0.3, 0.1, 0.5, 0.0], [0.2, 0.4, 0.0, 0.6]])  # traces [N, H]
    pre = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])  # the step's input spikes [N, D]
    target = torch.tensor([1.0, 0.0])
    layer = HebbianFFLayer(3, 4, third_factor="symmetric", symmetric_rule="notebook", goodness="sum_squares")
    by_hand = []
    for n in range(2):  # the notebook's expression, written out for one sample
        gp, gn = post[n, :2].pow(2).sum(), post[n, 2:].pow(2).sum()
        s = 1 / (gp + gn + 0.01)
        if target[n] == 1:  # positive: the first half grows, the second shrinks
            rewards = [(gn + 0.01) / (gp + 0.01) * s] * 2 + [-s] * 2
        else:
            rewards = [-s] * 2 + [(gp + 0.01) / (gn + 0.01) * s] * 2
        by_hand.append(torch.outer(post[n] * torch.stack(rewards), pre[n]))
    expected = torch.stack(by_hand).mean(0)
    torch.testing.assert_close(layer.update_direction(pre[None], post[None], target), 2 * expected)
    probability = NotebookSymmetricProbability(3, 4, use_et=False, nu=1.0)
    notebook = probability.hebbian_update(torch.zeros(3, 4), pre.unsqueeze(2), post.clone(), 1 - target.long())
    torch.testing.assert_close(notebook.t(), expected)
    gradient = HebbianFFLayer(3, 4, third_factor="symmetric", goodness="sum_squares")
    g = post.pow(2).view(2, 2, 2).sum(2).sum(1)
    ratio = ((g + 0.01) / (g + 0.02)).view(2, 1, 1)
    per_sample = torch.stack(by_hand) * ratio * 2
    torch.testing.assert_close(gradient.update_direction(pre[None], post[None], target), per_sample.mean(0))


@pytest.mark.parametrize("clamped", [False, True])
@pytest.mark.parametrize("third_factor", ["symmetric", "sigmoid"])
def test_analog_update_is_minus_the_gradient_of_the_notebooks_clamped_bce(third_factor, clamped):
    """ReLU units: the update equals -dL/dW by autograd of the notebook's analog loss, BCE of P clamped to
    [1e-5, 1 - 1e-5] (Symmetric_Probability.compute_probs; Standard_Probability_ANN with theta 3.5, scale 1);
    with `clamped`, a sample's P is beyond the clamp, where the loss has no gradient."""
    torch.manual_seed(0)
    layer = HebbianFFLayer(
        10, 6, neuron="relu", third_factor=third_factor, goodness="sum_squares", theta=3.5, scale=1.0, p_clip=1e-5
    )
    x = torch.rand(5, 10)
    if clamped:
        x[4] *= 40
        layer.weight[:3] = layer.weight[:3].abs()
        layer.weight[3:] = -layer.weight[3:].abs()  # the negative half silent: P = (G+ + 0.01) / (G+ + 0.02)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    w = layer.weight.clone().requires_grad_(True)
    h = torch.relu(x @ w.t())
    if third_factor == "symmetric":
        gp, gn = torch.norm(h[:, :3], dim=1).pow(2), torch.norm(h[:, 3:], dim=1).pow(2)
        p = (gp + 0.01) / (gp + gn + 0.02)
    else:
        p = torch.sigmoid(1.0 * (torch.norm(h, dim=1).pow(2) - 3.5))
    torch.nn.BCELoss()(torch.clamp(p, 1e-5, 1 - 1e-5), target).backward()
    assert ((p < 1e-5) | (p > 1 - 1e-5)).any() == clamped
    post, _, pre, _ = layer.simulate(x[None])
    torch.testing.assert_close(layer.update_direction(pre, post, target), -w.grad, rtol=1e-4, atol=1e-6)


def test_analog_preset_steps_adam_as_the_notebook_does():
    """Three batches through the analog preset's layer and through a torch.nn.Linear trained as the notebook's
    train_network_ann does (Adam lr 0.01 on the BCE of the clamped P): the same weights after each step."""
    torch.manual_seed(0)
    model, cfg = reference_model("hebbian-ffa-analog", 12, 8, **{"hebbian.code_bits": 5})
    trainer = make_trainer(model, cfg, progress=False)
    linear = torch.nn.Linear(17, 8, bias=False)
    linear.weight.data.copy_(model.layers[0].weight)
    optimizer = torch.optim.Adam(linear.parameters(), lr=0.01)
    for _ in range(3):
        x, labels = torch.rand(6, 12), torch.randint(0, 3, (6,))
        positivity = torch.tensor([1.0, 0, 1, 0, 1, 0])
        model.learn(x, labels, positivity, trainer.lr, trainer.generator, trainer.apply)
        out = torch.relu(linear(torch.cat([x, model.codes[labels]], 1)))
        gp, gn = torch.norm(out[:, :4], dim=1).pow(2), torch.norm(out[:, 4:], dim=1).pow(2)
        p = (gp + 0.01) / (gp + gn + 0.02)
        optimizer.zero_grad()
        torch.nn.BCELoss()(torch.clamp(p, 1e-5, 1 - 1e-5), positivity).backward()
        optimizer.step()
        torch.testing.assert_close(model.layers[0].weight, linear.weight.detach(), rtol=1e-5, atol=1e-6)
    bound = 1 / math.sqrt(17)  # torch.nn.Linear's default init, as the notebook's ReLU_Layer has it
    fresh = reference_model("hebbian-ffa-analog", 12, 8, **{"hebbian.code_bits": 5})[0].layers[0].weight
    assert fresh.abs().max() <= bound and fresh.abs().max() > 0.8 * bound


def test_the_notebooks_neuron_and_trace_by_hand():
    """mem <- 0.85 mem + I; a spike whenever mem > 0.001 (however far below the notebook's threshold of 2),
    then mem = 0; trace <- 0.85 trace + 0.15 spike."""
    model, _ = reference_model("hebbian-ffa-online", 1, 2, classes=2, **{"hebbian.code_bits": 1})
    layer = model.layers[0]
    layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    currents = [0.002, 0.0005, 0.0006, -0.01, 0.02]
    layer.begin_online(1)
    spikes, traces = [], []
    for c in currents:
        out, tr = layer.online_step(torch.tensor([[c, 0.0]]))
        spikes.append(out[0, 0].item())
        traces.append(tr[0, 0].item())
    assert spikes == [1.0, 0.0, 1.0, 0.0, 1.0]  # 0.002; 0.0005; 0.000425 + 0.0006; -0.01; -0.0085 + 0.02
    expected, tr = [], 0.0
    for s in spikes:
        tr = 0.85 * tr + 0.15 * s
        expected.append(tr)
    assert traces == pytest.approx(expected)
    assert layer._online[0][0, 0].item() == 0.0  # reset to zero, not by subtraction
    spike_train = torch.tensor(spikes).view(5, 1, 1)
    torch.testing.assert_close(trace(spike_train, "average", 0.85).flatten(), torch.tensor(expected))


def test_online_plasticity_learns_at_steps_16_to_22_only_from_the_steps_own_input():
    model, cfg = reference_model("hebbian-ffa-online", 6, 4, **{"hebbian.code_bits": 2})
    layer, calls = model.layers[0], []
    train = (torch.rand(cfg.spiking.steps + cfg.family_settings.rest_steps, 1, 8) < 0.5).float()
    model.input_train = lambda x, labels, generator: train  # noqa: ARG005 (a fixed input train)
    original = layer.learn_step
    layer.learn_step = lambda pre, post, target, lr: calls.append(pre.clone()) or original(pre, post, target, lr)
    model.learn(torch.rand(1, 6), torch.tensor([1]), torch.ones(1), 0.5, torch.Generator())
    assert cfg.spiking.steps == NOTEBOOK_STEPS and cfg.family_settings.learn_from == NOTEBOOK_LEARN_AFTER + 1
    assert len(calls) == 7  # t = 16 ... 22: `if t > 15` of range(23)
    torch.testing.assert_close(torch.stack(calls), train[16:23])


def test_the_eligibility_trace_is_a_moving_average_carried_across_updates():
    """E <- (1 - tau) E + tau dW at each update, W += lr E: a dW keeps acting on later updates."""
    layer = HebbianFFLayer(3, 2, eligibility_tau=0.1)
    w0 = layer.weight.clone()
    d1, d2 = torch.ones(2, 3), torch.full((2, 3), -2.0)
    layer.apply_update(d1, 0.5)
    layer.apply_update(d2, 0.5)
    e1 = 0.1 * d1
    e2 = 0.9 * e1 + 0.1 * d2
    torch.testing.assert_close(layer.eligibility, e2)
    torch.testing.assert_close(layer.weight, w0 + 0.5 * e1 + 0.5 * e2)
    assert "eligibility" in layer.state_dict()  # saved with the weights: a resumed run continues it
    assert "eligibility" not in HebbianFFLayer(3, 2).state_dict()


def test_label_codes_inputs_and_presentation_follow_the_notebook():
    codes = bernoulli_codes(10, 100, 0.3, seed=0)
    assert codes.shape == (10, 100) and set(codes.unique().tolist()) == {0.0, 1.0}
    assert abs(codes.mean().item() - 0.3) < 0.05 and len(codes.unique(dim=0)) == 10
    model, cfg = reference_model("hebbian-ffa-online", 784, 200, classes=10)
    assert torch.equal(model.codes, bernoulli_codes(10, 100, 0.3, seed=cfg.train.seed))
    x = torch.full((1, 784), 1.0)
    train = model.input_train(x, torch.tensor([0]), torch.Generator().manual_seed(0))
    assert train.shape == (23 + 20, 1, 884) and train[23:].abs().sum() == 0  # 23 steps and 20 silent ones
    assert abs(train[:23, 0, :784].mean().item() - 0.25) < 0.01  # a white pixel spikes with probability 0.25
    weights = model.layers[0].weight
    assert abs(weights.std().item() - 1.0) < 0.01 and abs(weights.mean().item()) < 0.01  # N(0, 1)
    # each image once, positive or negative with probability 1/2, a wrong label uniformly
    trainer = make_trainer(model, cfg, progress=False)
    seen = []
    model.learn = lambda x, labels, target, lr, gen, apply: seen.append((labels, target)) or []  # noqa: ARG005
    y = torch.randint(0, 10, (4000,))
    trainer.step(torch.zeros(4000, 784), y)
    labels, target = seen[0]
    assert len(labels) == 4000 and abs(target.mean().item() - 0.5) < 0.03
    assert torch.equal(labels[target == 1], y[target == 1]) and (labels[target == 0] != y[target == 0]).all()


# (preset, training images, accuracy bar): measured on 500 test images when written, seed 0: 28.2%, 26.0%, 61.0%
SHORT_RUNS = [
    ("hebbian-ffa-online", 1000, 0.2),
    ("hebbian-ffa-sigmoid", 1000, 0.18),
    ("hebbian-ffa-analog", 5000, 0.45),
]


@pytest.mark.slow
@pytest.mark.real_data("mnist")
@pytest.mark.parametrize("preset, images, bar", SHORT_RUNS)
def test_reference_preset_trains_on_a_few_thousand_images(preset, images, bar, tmp_path):
    cfg = load_config(
        config_path(f"reference/{preset}"),
        [f"data.train_subset={images}", "data.test_subset=500", "train.epochs=1", "train.monitor_size=0"]
        + ["eval.train_accuracy=false"],
    )
    summary = train_run(cfg, tmp_path / preset, progress=False, log=lambda s: None)
    assert summary["model"] == "hebbian" and summary["test_accuracy"] >= bar  # chance: 0.1


def test_reference_presets_are_found_by_name_in_their_folder(monkeypatch):
    from fflab.cli import _config_path

    monkeypatch.chdir(REPO)
    for preset in ("hebbian-ffa-online", "hebbian-ffa-analog", "hebbian-ffa-sigmoid"):
        path = _config_path(f"reference/{preset}")
        assert path.is_file() and load_config(path).name == preset


def test_symmetric_goodness_probability_and_loss_agree_with_the_notebook():
    post = torch.rand(3, 4, 6)  # [T, N, H]
    layer = HebbianFFLayer(2, 6, third_factor="symmetric", goodness="sum_squares")
    g = post.pow(2).view(3, 4, 2, 3).sum(-1).mean(0)
    torch.testing.assert_close(layer.goodness(post), g)
    notebook = NotebookSymmetricProbability(2, 6).compute_probs(post[-1])
    torch.testing.assert_close(layer.probability(post[-1:]), notebook)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0])
    torch.testing.assert_close(layer.loss(post[-1:], target), F.binary_cross_entropy(notebook, target))


@pytest.mark.slow
def test_a_resumed_online_run_equals_the_uninterrupted_one(tmp_path):
    """The eligibility trace (a buffer of the layer) and the carried membrane (the trainer's state) survive."""
    from test_resume import Stop, assert_same_run, stop_at_epoch

    cfg = load_config(
        config_path("reference/hebbian-ffa-online"),
        ["data.name=digits", "model.hidden=[20]", "train.epochs=3", "data.train_subset=60", "train.monitor_size=30"],
    )
    whole, run = tmp_path / "whole", tmp_path / "stopped"
    train_run(cfg, whole, log=lambda s: None, progress=False)
    with pytest.raises(Stop):
        train_run(cfg, run, log=stop_at_epoch(3), progress=False)
    train_run(cfg, run, log=lambda s: None, progress=False, resume=True)
    assert_same_run(whole, run)


@pytest.mark.parametrize(
    ("hebbian", "message"),
    [
        ({"plasticity": "online"}, r"goodness_at = 'last'"),
        ({"plasticity": "online", "goodness_at": "last", "update": "optimizer"}, r"update = 'rule'"),
        ({"carry_membrane": True}, r"carry_membrane: LIF units carry their membrane under online plasticity only"),
        ({"symmetric_rule": "notebook"}, r"hebbian.symmetric_rule: only the symmetric third factor reads this"),
        ({"learn_from": 3}, r"hebbian.learn_from: only online plasticity reads this"),
        ({"plasticity": "online", "goodness_at": "last", "learn_from": 24}, r"learn_from = 24: a presentation has"),
    ],
)
def test_settings_of_the_notebooks_mechanisms_are_checked(hebbian, message):
    from fflab.config import config_from_dict
    from fflab.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        config_from_dict({"model": {"kind": "hebbian"}, "hebbian": hebbian, "eval": {"predict": "goodness"}})


def test_the_optimizer_update_reads_train_optimizer_and_the_rule_refuses_it():
    from fflab.config import config_from_dict
    from fflab.errors import ConfigError

    base = {"model": {"kind": "hebbian"}, "eval": {"predict": "goodness"}, "train": {"optimizer": "sgd"}}
    assert config_from_dict({**base, "hebbian": {"update": "optimizer"}}).train.optimizer == "sgd"
    with pytest.raises(ConfigError, match="train.optimizer"):
        config_from_dict(base)
