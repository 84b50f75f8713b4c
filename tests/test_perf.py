"""Machine settings: threads, the allocator setting that keeps freed tensors' memory for reuse, and the
compute precision."""

import os
import platform
import sys

import pytest
import torch

from fflab import perf
from fflab.config import load_config
from fflab.objectives import mean_squares, sum_squares
from fflab.perf import compute_precision, keep_freed_memory, matmul_peak_gflops, set_threads
from fflab.training.run import train_run


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting"
)
def test_freed_memory_is_kept_on_glibc():
    assert keep_freed_memory() is True


def test_set_threads_uses_every_core_by_default():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_threads(0) == (os.cpu_count() or 1) == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_matmul_peak_is_a_positive_rate():
    assert matmul_peak_gflops(sizes=(64,), repeats=2, rounds=1) > 0


def test_matmul_peak_is_measured_at_the_precision_asked_for(monkeypatch):
    dtypes = set()
    mm = torch.mm

    def recording_mm(a, b, **kwargs):
        dtypes.update((a.dtype, b.dtype))
        return mm(a, b, **kwargs)

    monkeypatch.setattr(torch, "mm", recording_mm)
    assert matmul_peak_gflops(sizes=(64,), repeats=2, rounds=1, precision="bfloat16") > 0
    assert dtypes == {torch.bfloat16}


def test_bfloat16_precision_runs_products_in_bfloat16_but_keeps_weights_and_goodness_float32():
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with compute_precision("float32", "cpu"):
        assert layer(x).dtype == torch.float32
    with compute_precision("bfloat16", "cpu"):
        h = layer(x)
        assert h.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
        # goodness of bfloat16 activity is summed in float32: the hand computation on the same values
        exact = h.float().pow(2)
        assert sum_squares(h).dtype == torch.float32
        assert torch.equal(sum_squares(h), exact.sum(1)) and torch.equal(mean_squares(h), exact.mean(1))


def test_bfloat16_precision_sees_each_weight_update():
    # A whole run computes inside one context, so cast weights must not be cached across steps.
    layer = torch.nn.Linear(4, 1, bias=False)
    x = torch.ones(1, 4)
    with compute_precision("bfloat16", "cpu"):
        before = layer(x).item()
        with torch.no_grad():
            layer.weight.add_(1.0)
        assert layer(x).item() == pytest.approx(before + 4.0, abs=0.05)


def test_unknown_precision_is_named():
    with pytest.raises(ValueError, match="unknown precision 'float16'.*bfloat16"):
        compute_precision("float16", "cpu")


@pytest.mark.parametrize(("bf16_rate", "warned"), [(20.0, True), (250.0, False)])
def test_bfloat16_on_a_cpu_without_native_support_is_warned_about(monkeypatch, bf16_rate, warned):
    rates = {"bfloat16": bf16_rate, "float32": 120.0}
    monkeypatch.setattr(perf, "matmul_peak_gflops", lambda precision, **kwargs: rates[precision])
    warning = perf.slow_bfloat16_warning("bfloat16", "cpu")
    assert (warning is not None) == warned
    if warned:
        assert "20 GFLOP/s" in warning and "120 in float32" in warning and "train.precision=float32" in warning
    assert perf.slow_bfloat16_warning("float32", "cpu") is None  # nothing to warn about, nothing measured


def test_a_run_in_slow_bfloat16_says_so_in_its_log(monkeypatch, tmp_path):
    monkeypatch.setattr(
        perf, "matmul_peak_gflops", lambda precision, **kwargs: {"bfloat16": 20.0}.get(precision, 120.0)
    )
    lines = []
    cfg = load_config(
        "configs/mnist-ff.toml",
        ["data.name=digits", "train.epochs=1", "model.hidden=[16]", "train.precision=bfloat16", "train.monitor_size=0"],
    )
    train_run(cfg, tmp_path / "run", progress=False, log=lines.append)
    assert any(line.startswith("warning: this CPU multiplies bfloat16 matrices at 20 GFLOP/s") for line in lines)
