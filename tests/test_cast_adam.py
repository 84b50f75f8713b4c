"""CastAdam: Adam with the bfloat16 casts of a weight fused into its step (fflab.training.cast_adam)."""

import copy
from types import SimpleNamespace

import pytest
import torch
from repo import shipped_config

from fflab.config import TrainSettings
from fflab.layers.dense import FFDense
from fflab.perf import compute_precision
from fflab.training import cast_adam
from fflab.training.parallel import DistributedFFTrainer
from fflab.training.run import train_run
from fflab.training.trainer import make_optimizer

needs_kernel = pytest.mark.skipif(cast_adam.kernel() is None, reason="no C compiler to build the cast-Adam kernel")


def step_once(param, grad, *, lr, decay=0.0, decoupled=False, step=1, moments=None):
    m, v = moments or (torch.zeros_like(param), torch.zeros_like(param))
    cast = torch.empty_like(param, dtype=torch.bfloat16)
    cast_adam.cast_adam_step_(
        param, grad, m, v, cast, step=step, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=decay, decoupled=decoupled
    )
    return m, v, cast


@needs_kernel
def test_the_first_step_moves_each_weight_by_lr_against_its_gradients_sign_as_adams_formula_gives():
    # Hand computation from Adam's formula (Kingma & Ba, Algorithm 1) at step 1: m = (1 - b1) g, v = (1 - b2) g^2,
    # m / (1 - b1) = g and sqrt(v / (1 - b2)) = |g|, so the step is lr * g / (|g| + eps).
    param = torch.tensor([1.0, -2.0, 0.5, 0.0])
    grad = torch.tensor([0.5, -0.25, 2.0, 0.0], dtype=torch.bfloat16)
    m, v, cast = step_once(param, grad, lr=0.1)
    g = [0.5, -0.25, 2.0, 0.0]
    expected = [w - 0.1 * gi / (abs(gi) + 1e-8) for w, gi in zip([1.0, -2.0, 0.5, 0.0], g, strict=True)]
    assert param.tolist() == pytest.approx(expected, abs=1e-6)
    assert m.tolist() == pytest.approx([0.1 * gi for gi in g], rel=1e-6)
    assert v.tolist() == pytest.approx([0.001 * gi * gi for gi in g], rel=1e-4)  # 1 - b2 in float32
    assert torch.equal(cast, param.bfloat16())


@needs_kernel
def test_weight_decay_follows_adam_l2_and_adamw_decoupled():
    # Adam adds decay * w to the gradient; AdamW first shrinks w by lr * decay * w (Loshchilov & Hutter).
    w0, g, lr, decay = 2.0, 1.0, 0.1, 0.5
    adam, adamw = torch.tensor([w0]), torch.tensor([w0])
    step_once(adam, torch.tensor([g]), lr=lr, decay=decay)
    step_once(adamw, torch.tensor([g]), lr=lr, decay=decay, decoupled=True)
    assert adam.item() == pytest.approx(w0 - lr * 1.0, abs=1e-6)  # sign of g + decay * w0 = 2.0 is +
    assert adamw.item() == pytest.approx(w0 * (1 - lr * decay) - lr, abs=1e-6)


@needs_kernel
@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("grad_dtype", [torch.bfloat16, torch.float32])
def test_steps_agree_with_torchs_fused_adam_on_the_same_gradients(decoupled, grad_dtype):
    torch.manual_seed(0)
    param = torch.randn(300, 700)  # over the size split across threads
    reference = param.clone().requires_grad_()
    torch_adam = torch.optim.Adam([reference], lr=0.01, weight_decay=0.1, decoupled_weight_decay=decoupled, fused=True)
    moments = (torch.zeros_like(param), torch.zeros_like(param))
    for step in range(1, 6):
        grad = torch.randn_like(param).to(grad_dtype)
        reference.grad = grad.float()
        torch_adam.step()
        _, _, cast = step_once(param, grad, lr=0.01, decay=0.1, decoupled=decoupled, step=step, moments=moments)
    state = torch_adam.state[reference]
    torch.testing.assert_close(param, reference.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(moments[0], state["exp_avg"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(moments[1], state["exp_avg_sq"], rtol=1e-6, atol=1e-9)
    assert torch.equal(cast, param.bfloat16())  # rounded to nearest even, as torch casts


def test_bad_tensors_are_refused_by_name_with_or_without_a_kernel():
    param = torch.zeros(4, 4)
    with pytest.raises(ValueError, match="exp_avg must be a contiguous"):
        cast_adam.cast_adam_step_(
            param, torch.zeros(4, 4), torch.zeros(4, 4).t()[:, :3], torch.zeros(4, 4), torch.zeros(4, 4).bfloat16(),
            step=1, lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False,
        )  # fmt: skip


def train_steps(layer, optimizer, xs):
    for x in xs:
        with compute_precision("bfloat16", "cpu"):
            loss = layer(x).float().square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@needs_kernel
@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_a_dense_layer_trains_as_with_autocasts_casts_and_torchs_adam(name, monkeypatch):
    torch.manual_seed(0)
    xs = torch.randn(6, 32, 40)
    settings = TrainSettings(optimizer=name, lr=0.01, weight_decay=0.01, precision="bfloat16")
    fused, plain = FFDense(40, 24), FFDense(40, 24)
    plain.load_state_dict(fused.state_dict())
    opt = make_optimizer(fused.parameters(), settings, fused.kept_casts())
    assert isinstance(opt, cast_adam.CastAdam)
    with monkeypatch.context() as patch:
        patch.setattr(cast_adam, "kernel", lambda: None)  # a machine without a C compiler
        reference = make_optimizer(plain.parameters(), settings, plain.kept_casts())
    # the reference: autocast casts the weight at each product, torch's fused Adam steps it
    assert type(reference) is torch.optim.Adam and reference.defaults["decoupled_weight_decay"] == (name == "adamw")
    train_steps(fused, opt, xs)
    train_steps(plain, reference, xs)
    assert plain.linear.weight.grad is not None and fused.linear.weight.grad is None  # read from the kept cast
    for a, b in zip(fused.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # The next products use the copy the step wrote, which is the weight as it is now.
    assert torch.equal(fused.weight_cast.cast, fused.linear.weight.detach().bfloat16())
    with compute_precision("bfloat16", "cpu"), torch.no_grad():
        assert fused.product_weight() is fused.weight_cast.cast


@needs_kernel
def test_the_optimiser_state_passes_between_cast_adam_and_torchs_adam():
    torch.manual_seed(0)
    xs = torch.randn(4, 16, 20)
    settings = TrainSettings(optimizer="adam", lr=0.01, precision="bfloat16")
    start = FFDense(20, 12)
    layer = FFDense(20, 12)
    layer.load_state_dict(start.state_dict())
    opt = make_optimizer(layer.parameters(), settings, layer.kept_casts())
    train_steps(layer, opt, xs[:2])
    saved = copy.deepcopy(opt.state_dict())  # as a checkpoint holds it (state_dict() shares the live tensors)
    assert all(set(s) == {"step", "exp_avg", "exp_avg_sq"} and int(s["step"]) == 2 for s in saved["state"].values())
    # Carry on with torch's Adam from CastAdam's state, and with CastAdam from it: the same next steps.
    carried = FFDense(20, 12)
    carried.load_state_dict(layer.state_dict())
    plain = torch.optim.Adam(carried.parameters(), lr=0.01, fused=True)
    plain.load_state_dict(saved)
    train_steps(layer, opt, xs[2:])
    train_steps(carried, plain, xs[2:])
    for a, b in zip(layer.parameters(), carried.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert all(int(s["step"]) == 4 for s in plain.state.values())


@needs_kernel
def test_a_weight_used_twice_in_one_step_takes_the_sum_of_both_gradients():
    torch.manual_seed(0)
    x1, x2 = torch.randn(2, 8, 20)
    settings = TrainSettings(optimizer="adam", lr=0.01, precision="bfloat16")
    fused, plain = FFDense(20, 12), FFDense(20, 12)
    plain.load_state_dict(fused.state_dict())
    optimizers = [make_optimizer(fused.parameters(), settings, fused.kept_casts())]
    optimizers.append(torch.optim.Adam(plain.parameters(), lr=0.01, fused=True))
    for layer, opt in zip((fused, plain), optimizers, strict=True):
        with compute_precision("bfloat16", "cpu"):
            loss = layer(x1).float().square().sum() + layer(x2).float().sum()
        loss.backward()
        opt.step()
    for a, b in zip(fused.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@needs_kernel
def test_a_gradient_on_the_weight_too_is_added_and_stepped_once():
    torch.manual_seed(0)
    x = torch.randn(8, 20)
    settings = TrainSettings(optimizer="adam", lr=0.01, precision="bfloat16")
    fused, plain = FFDense(20, 12), FFDense(20, 12)
    plain.load_state_dict(fused.state_dict())
    opt = make_optimizer(fused.parameters(), settings, fused.kept_casts())
    reference = torch.optim.Adam(plain.parameters(), lr=0.01, fused=True)
    for layer, step in ((fused, opt), (plain, reference)):
        with compute_precision("bfloat16", "cpu"):
            in_bfloat16 = layer(x).float().square().sum()
        in_float32 = (x @ layer.linear.weight.t()).sum()  # outside autocast: its gradient reaches .grad
        (in_bfloat16 + in_float32).backward()
        step.step()
    assert int(opt.state[fused.linear.weight]["step"]) == 1 and fused.linear.weight.grad is None
    for a, b in zip(fused.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert torch.equal(fused.weight_cast.cast, fused.linear.weight.detach().bfloat16())


def test_a_dense_layer_stepped_by_another_optimiser_never_reads_a_stale_copy():
    # torch's fused optimisers write weights without moving their version counters; without CastAdam the layer
    # lets autocast cast the current weight at every product.
    torch.manual_seed(0)
    layer, x = FFDense(20, 12), torch.randn(8, 20)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1, fused=True)
    train_steps(layer, opt, torch.randn(3, 8, 20))
    with compute_precision("bfloat16", "cpu"), torch.no_grad():
        out = layer(x)
    with torch.no_grad():
        expected = layer(x)  # float32, from the weight as it is
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)
    assert layer.product_weight() is layer.linear.weight


@needs_kernel
def test_loading_weights_replaces_the_kept_copy():
    layer = FFDense(20, 12)
    settings = TrainSettings(optimizer="adam", lr=0.01, precision="bfloat16")
    train_steps(layer, make_optimizer(layer.parameters(), settings, layer.kept_casts()), torch.randn(2, 8, 20))
    layer.load_state_dict({**layer.state_dict(), "linear.weight": torch.zeros(12, 20)})
    with compute_precision("bfloat16", "cpu"), torch.no_grad():
        assert torch.all(layer.product_weight() == 0)


def test_cast_adam_refuses_options_it_does_not_step():
    layer = FFDense(4, 3)
    with pytest.raises(ValueError, match="no amsgrad"):
        cast_adam.CastAdam(layer.parameters(), layer.kept_casts(), amsgrad=True)


def test_float32_runs_and_other_optimisers_keep_torchs_own():
    layer = FFDense(20, 12)
    for settings in (TrainSettings(optimizer="adam", precision="float32"), TrainSettings(optimizer="sgd")):
        opt = make_optimizer(layer.parameters(), settings, layer.kept_casts())
        assert not isinstance(opt, cast_adam.CastAdam)
    assert not layer.weight_cast.collect_gradient


@needs_kernel
def test_an_optimiser_made_after_cast_adam_gets_the_weights_gradients_back():
    layer = FFDense(20, 12)
    make_optimizer(layer.parameters(), TrainSettings(precision="bfloat16"), layer.kept_casts())
    sgd = make_optimizer(layer.parameters(), TrainSettings(optimizer="sgd", precision="bfloat16"), layer.kept_casts())
    train_steps(layer, sgd, torch.randn(1, 8, 20))
    assert layer.linear.weight.grad is not None and layer.weight_cast.grad is None


def test_data_parallel_replicas_keep_gradients_on_the_weights():
    # Replicas all-reduce the weights' .grad; CastAdam would take the gradient before it.
    trainer = DistributedFFTrainer.__new__(DistributedFFTrainer)
    layer = FFDense(4, 3)
    trainer.plan = SimpleNamespace(replicas=2)
    assert trainer.kept_casts(layer) == {}
    trainer.plan = SimpleNamespace(replicas=1)
    assert trainer.kept_casts(layer) == {layer.linear.weight: layer.weight_cast}


def test_without_a_c_compiler_there_is_no_kernel_and_training_keeps_torchs_adam(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("FFLAB_CACHE", str(tmp_path / "cache"))
    cast_adam.kernel.cache_clear()
    try:
        assert cast_adam.kernel() is None
        layer = FFDense(4, 3)
        opt = make_optimizer(layer.parameters(), TrainSettings(precision="bfloat16"), layer.kept_casts())
        assert type(opt) is torch.optim.Adam
    finally:
        cast_adam.kernel.cache_clear()


@needs_kernel
def test_the_kernel_is_built_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FFLAB_CACHE", str(tmp_path))
    cast_adam.kernel.cache_clear()
    try:
        assert cast_adam.kernel() is not None
        built = list(tmp_path.glob("cast_adam-*.so"))
        assert len(built) == 1 and not list(tmp_path.glob("tmp*"))  # no half-written library left behind
        mtime = built[0].stat().st_mtime_ns
        cast_adam.kernel.cache_clear()
        assert cast_adam.kernel() is not None and built[0].stat().st_mtime_ns == mtime
    finally:
        cast_adam.kernel.cache_clear()


@pytest.mark.parametrize("built", [True, False])
def test_a_bfloat16_run_says_when_the_kernel_could_not_be_built(built, tmp_path, monkeypatch):
    if built and cast_adam.kernel() is None:
        pytest.skip("no C compiler to build the cast-Adam kernel")
    if not built:
        monkeypatch.setattr(cast_adam, "kernel", lambda: None)
    overrides = ["train.epochs=1", "train.precision=bfloat16", "model.hidden=[16]", "train.threads=1"]
    logged = []
    train_run(shipped_config("digits-ff", overrides), tmp_path / "run", log=logged.append, progress=False)
    notes = [line for line in logged if "CastAdam's kernel could not be built" in line]
    assert len(notes) == (0 if built else 1)
