"""The tiled locally connected product: the masked dense product it replaces, computed per tile of positions."""

import pytest
import torch
from repo import shipped_config
from safetensors.torch import load_file, save_file

from fflab.checkpoint import TRAINING_STATE, load_checkpoint, load_training_state, upgrade_saved_state
from fflab.cli import main
from fflab.config import TrainSettings, load_config
from fflab.data import load_dataset
from fflab.layers.conv import FFLocal2d, field_geometry, receptive_field_mask
from fflab.layers.local import TiledLocalLinear
from fflab.layers.recurrent import RecurrentLayer
from fflab.models import build_model
from fflab.perf import compute_precision
from fflab.training.run import train_run
from fflab.training.trainer import make_optimizer


def masked_dense(in_shape, out_channels, kernel, stride=1, padding="same", label=0):
    """A random masked dense weight, its mask and the output map shape; `label` appends a dense block of that
    many inputs every unit sees (the top recurrent layer's label)."""
    c, h, w = in_shape
    mh, mw = (field_geometry(side, kernel, stride, padding)[0] for side in (h, w))
    mask = receptive_field_mask(in_shape, out_channels, kernel, stride, padding)
    mask = torch.cat([mask, torch.ones(len(mask), label, dtype=torch.bool)], 1)
    return torch.randn(mask.shape) * mask, mask, (out_channels, mh, mw)


@pytest.mark.parametrize(
    ("in_shape", "out_channels", "kernel", "stride", "padding", "label"),
    [
        ((3, 32, 32), 3, 11, 1, "same", 0),  # Hinton's CIFAR-10 layer
        ((2, 9, 5), 3, 3, 1, "same", 0),  # a map no tile side divides
        ((1, 28, 28), 2, 10, 6, "valid", 0),  # the unsupervised MNIST net's strided grid
        ((3, 7, 7), 4, 3, 2, "same", 0),
        ((6, 12, 12), 3, 5, 1, "same", 10),  # two maps side by side and a dense label block
    ],
)
def test_tiled_product_equals_the_masked_dense_product(in_shape, out_channels, kernel, stride, padding, label):
    torch.manual_seed(0)
    dense, mask, out_shape = masked_dense(in_shape, out_channels, kernel, stride, padding, label)
    bias = torch.randn(len(dense))
    tiled = TiledLocalLinear(dense, mask, out_shape, bias=bias)
    assert torch.equal(tiled.to_dense(tiled.weight.detach()), dense)
    assert torch.equal(tiled.to_dense(tiled.mask), mask)
    x = torch.randn(5, dense.shape[1])
    y = tiled(x)
    assert torch.allclose(y, x @ dense.t() + bias, atol=1e-4)
    # the weight gradient is the dense one, restricted to the fields
    target = torch.randn_like(y)
    ((y - target) ** 2).sum().backward()
    expected = 2 * (x @ dense.t() + bias - target).t() @ x * mask
    assert torch.allclose(tiled.to_dense(tiled.weight.grad), expected, atol=1e-3)
    assert torch.all(tiled.weight.grad[~tiled.mask] == 0)


def test_tile_padding_reads_nothing_into_the_product():
    # padding positions of a tile's window gather input 0 against a weight held at zero: a huge input 0
    # reaches only the units whose fields hold it
    torch.manual_seed(0)
    dense, mask, out_shape = masked_dense((3, 32, 32), 3, 11)
    tiled = TiledLocalLinear(dense, mask, out_shape)
    assert (tiled.cols == dense.shape[1]).any()  # the edge tiles' windows are padded
    x = torch.randn(4, dense.shape[1])
    x[:, 0] = 1e30
    sees_input_0 = mask[:, 0]
    assert torch.allclose(tiled(x)[:, ~sees_input_0], (x @ dense.t())[:, ~sees_input_0], atol=1e-4)


def test_gradients_are_masked_after_several_uses_and_backward_passes():
    torch.manual_seed(0)
    dense, mask, out_shape = masked_dense((3, 32, 32), 3, 11)  # padded windows too
    tiled = TiledLocalLinear(dense, mask, out_shape)
    x = torch.randn(4, dense.shape[1])
    (tiled(x).sum() + tiled(2 * x).square().sum()).backward()  # two uses in one pass
    tiled(x).sum().backward()  # accumulated into the same .grad
    ones = torch.ones(len(x), len(dense))
    expected = (2 * ones.t() @ x + 2 * (2 * x @ dense.t()).t() @ (2 * x)) * mask
    assert torch.all(tiled.weight.grad[~tiled.mask] == 0)
    assert torch.allclose(tiled.to_dense(tiled.weight.grad), expected, atol=1e-3)


def test_cifar_fields_run_in_8x8_tiles_with_a_third_of_the_dense_work():
    dense, mask, out_shape = masked_dense((3, 32, 32), 3, 11)
    tiled = TiledLocalLinear(dense, mask, out_shape)
    assert tiled.side == 8 and tuple(tiled.weight.shape) == (16, 8 * 8 * 3, 18 * 18 * 3)
    assert tiled.weight.numel() < dense.numel() / 3  # 3.0M multiply-adds per row against 9.4M


def test_weights_outside_the_fields_stay_zero_under_adam_with_weight_decay():
    torch.manual_seed(0)
    dense, mask, out_shape = masked_dense((2, 9, 5), 3, 3)
    tiled = TiledLocalLinear(dense, mask, out_shape)
    opt = torch.optim.AdamW(tiled.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        tiled(torch.randn(4, dense.shape[1])).square().sum().backward()
        opt.step()
    assert torch.all(tiled.weight[~tiled.mask] == 0) and not torch.equal(tiled.to_dense(tiled.weight.detach()), dense)


LOCAL = ["model.architecture=local", "model.hidden=[1,1]", "model.kernel=3", "train.threads=1", "train.monitor_size=0"]
RECURRENT = [*LOCAL, "model.kind=recurrent", 'recurrent.source_init=["kaiming","kaiming","kaiming"]']
RUNS = {
    "ff": [*LOCAL, "model.label=pattern"],
    "sum": RECURRENT,
    "metalayer": [*RECURRENT, "recurrent.wiring=metalayer"],
}


def as_dense_layout(model, state: dict) -> dict:
    """`state` rewritten as fflab saved it before the tiled layout (b6cdc70): FFLocal2d's dense `weight`, the
    sum wiring's fused `linear.weight` (columns up | down | lateral) and `linear.bias`, dense metalayer units."""
    old = {k: v for k, v in state.items() if not k.endswith(("tile_side", "rows_first"))}
    for name, module in model.named_modules():
        p = f"{name}."
        if isinstance(module, FFLocal2d):
            old[p + "weight"] = module.product.to_dense(old.pop(p + "product.weight"))
        elif isinstance(module, RecurrentLayer) and module.local and module.wiring == "sum":
            up, rest = (getattr(module, n).to_dense(old.pop(f"{p}{n}.weight")) for n in ("up", "rest"))
            old[p + "linear.weight"], old[p + "linear.bias"] = torch.cat([up, rest], 1), old.pop(p + "bias")
        elif isinstance(module, RecurrentLayer) and module.local:
            for j, unit in enumerate(module.units):
                if isinstance(unit, TiledLocalLinear):
                    old[f"{p}units.{j}.weight"] = unit.to_dense(old[f"{p}units.{j}.weight"])
    return old


def as_window_first(model, state: dict) -> dict:
    """`state` rewritten as fflab saved it from b6cdc70 until d41d425: tiled weights [tiles, window, tile_rows]."""
    old = dict(state)
    for name, module in model.named_modules():
        if isinstance(module, TiledLocalLinear):
            del old[f"{name}.rows_first"]
            old[f"{name}.weight"] = old[f"{name}.weight"].transpose(1, 2)
    return old


@pytest.mark.slow
@pytest.mark.parametrize("layout", [as_dense_layout, as_window_first])
@pytest.mark.parametrize("name", sorted(RUNS))
def test_checkpoints_saved_in_older_layouts_load_and_score_as_they_did(tmp_path, name, layout):
    run = tmp_path / name
    train_run(shipped_config("digits-ff", [*RUNS[name], "train.epochs=1"]), run, progress=False, log=lambda s: None)
    model, _, _ = load_checkpoint(run)
    x = load_dataset("digits", progress=False).test_x[:5]
    with torch.no_grad():
        expected = model.label_scores(x)
    old = layout(model, load_file(run / "model.safetensors"))
    save_file({k: v.contiguous() for k, v in old.items()}, run / "model.safetensors")
    loaded, _, _ = load_checkpoint(run)
    with torch.no_grad():
        assert torch.allclose(loaded.label_scores(x), expected, atol=1e-5)
    products = [m for m in loaded.modules() if isinstance(m, TiledLocalLinear)]
    assert products and all(torch.all(p.weight[~p.mask] == 0) for p in products)


def test_a_training_state_of_the_dense_layout_is_refused_by_name(tmp_path, capsys):
    run = tmp_path / "stopped"

    def stop(line: str) -> None:
        if line.startswith("epoch   2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(shipped_config("digits-ff", [*RECURRENT, "train.epochs=2"]), run, progress=False, log=stop)
    state = load_training_state(run)
    cfg = load_config(run / "config.toml")
    model = build_model(cfg, 64, 10, input_shape=(1, 8, 8))
    state["model"] = as_dense_layout(model, state["model"])
    torch.save(state, run / TRAINING_STATE)
    assert main(["resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "was saved by an older fflab, whose weights of layers.0, layers.0.up" in err and "start it again" in err


def test_a_weight_tiled_with_another_side_is_retiled_on_loading():
    torch.manual_seed(0)
    dense, mask, out_shape = masked_dense((2, 12, 12), 3, 5)
    fine, coarse = (TiledLocalLinear(dense, mask, out_shape, side=side) for side in (4, 12))
    state = fine.state_dict()
    assert upgrade_saved_state(coarse, state) == [""]  # the root module changed layout
    coarse.load_state_dict(state)
    assert torch.equal(coarse.to_dense(coarse.weight.detach()), dense) and int(coarse.tile_side) == 12
    same = fine.state_dict()
    del same["tile_side"]  # saved before the side was: taken to be this build's
    assert upgrade_saved_state(fine, same) == [] and int(same["tile_side"]) == 4


def test_a_weight_saved_window_first_is_reordered_on_loading():
    torch.manual_seed(0)
    dense, mask, out_shape = masked_dense((2, 12, 12), 3, 5)
    tiled = TiledLocalLinear(dense, mask, out_shape)
    state = tiled.state_dict()
    del state["rows_first"]  # saved before d41d425 (2026-12-05): [tiles, window, tile_rows]
    state["weight"] = state["weight"].transpose(1, 2).contiguous()
    fresh = TiledLocalLinear(torch.zeros_like(dense), mask, out_shape)
    assert upgrade_saved_state(fresh, state) == [""]
    fresh.load_state_dict(state)
    assert torch.equal(fresh.to_dense(fresh.weight.detach()), dense)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_a_bfloat16_product_follows_every_step_of_fflabs_fused_optimisers(optimizer):
    torch.manual_seed(0)
    dense, mask, out_shape = masked_dense((2, 9, 5), 3, 3)
    tiled = TiledLocalLinear(dense, mask, out_shape)
    opt = make_optimizer(tiled.parameters(), TrainSettings(optimizer=optimizer, lr=0.1, momentum=0.9))
    x = torch.randn(4, dense.shape[1])
    for _ in range(3):
        for grad in (False, True):
            with compute_precision("bfloat16", "cpu"), torch.set_grad_enabled(grad):
                kept = tiled(x)
            expected = x.bfloat16().float() @ tiled.to_dense(tiled.weight.detach()).bfloat16().float().t()
            assert torch.allclose(kept.float(), expected, rtol=1e-2, atol=1e-2)
        cast = tiled.weight_cast.cast
        with compute_precision("bfloat16", "cpu"), torch.no_grad():
            tiled(x)
        assert tiled.weight_cast.cast is cast  # kept while the weight stays as it is
        opt.zero_grad()
        kept.float().square().sum().backward()
        opt.step()
    tiled.load_state_dict({**tiled.state_dict(), "weight": torch.zeros_like(tiled.weight)})
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert torch.all(tiled(x) == 0)


def test_a_kept_bfloat16_cast_passes_each_products_gradient_back_as_autocast_does():
    torch.manual_seed(0)
    dense, mask, out_shape = masked_dense((2, 9, 5), 3, 3)
    x1, x2 = torch.randn(2, 4, dense.shape[1])
    grads = []
    for kept in (True, False):
        tiled = TiledLocalLinear(dense, mask, out_shape)
        if not kept:  # the cast autocast itself makes at every product
            tiled._weight_as = lambda dtype, tiled=tiled: tiled.weight
        with compute_precision("bfloat16", "cpu"):  # autocast as fflab runs it: no cache of its own
            (tiled(x1).float().square().sum() + tiled(x2).float().sum()).backward()
        grads.append(tiled.weight.grad)
    assert grads[0].dtype == torch.float32 and torch.equal(grads[0], grads[1])


@pytest.mark.slow
def test_bfloat16_training_with_kept_casts_matches_autocasts_own_casts(tmp_path, monkeypatch):
    settings = [*RECURRENT, "train.epochs=2", "train.precision=bfloat16"]
    train_run(shipped_config("digits-ff", settings), tmp_path / "kept", progress=False, log=lambda s: None)
    with monkeypatch.context() as patch:  # every product casts its weight afresh, as autocast alone does
        patch.setattr(TiledLocalLinear, "_weight_as", lambda self, dtype: self.weight)
        train_run(shipped_config("digits-ff", settings), tmp_path / "fresh", progress=False, log=lambda s: None)
    kept, fresh = (load_file(tmp_path / run / "model.safetensors") for run in ("kept", "fresh"))
    assert kept.keys() == fresh.keys() and all(torch.equal(kept[k], fresh[k]) for k in kept)
