"""Machine settings: threads, the allocator setting that keeps freed tensors' memory for reuse, and the
compute precision."""

import json
import os
import platform
import subprocess
import sys

import pytest
import torch

from fflab import perf
from fflab.cli import main
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


def test_matmul_peak_stops_at_a_size_too_slow_to_time_at_length(monkeypatch):
    # A CPU that emulates bfloat16 multiplies at about 1 GFLOP/s: the full rounds of a 2048 product would take minutes.
    sizes = []
    mm = torch.mm

    def recording_mm(a, b, **kwargs):
        sizes.append(a.shape[0])
        return mm(a, b, **kwargs)

    monkeypatch.setattr(torch, "mm", recording_mm)
    assert matmul_peak_gflops(sizes=(64, 128), repeats=3, rounds=2, budget_seconds=0) > 0
    assert sizes == [64]  # the first product's rate stands; no rounds, no larger size
    sizes.clear()
    matmul_peak_gflops(sizes=(64, 128), repeats=3, rounds=2, budget_seconds=60)
    assert sizes == [64] * (2 + 2 * 3) + [128] * (2 + 2 * 3)  # two warm-up products, then the rounds


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


def fake_rates(monkeypatch, bfloat16: float, float32: float = 120.0) -> None:
    rates = {"bfloat16": bfloat16, "float32": float32}
    monkeypatch.setattr(perf, "matmul_peak_gflops", lambda precision, **kwargs: rates[precision])


@pytest.mark.parametrize(("bf16_rate", "bfloat16_pays"), [(20.0, False), (130.0, False), (250.0, True)])
def test_auto_precision_takes_bfloat16_only_where_the_cpu_multiplies_it_faster(monkeypatch, bf16_rate, bfloat16_pays):
    fake_rates(monkeypatch, bf16_rate)
    chosen, note = perf.settle_precision("auto", "cpu")
    assert chosen == ("bfloat16" if bfloat16_pays else "float32")
    assert (
        note == f'train.precision = "auto": {chosen} (this CPU multiplies bfloat16 matrices at {bf16_rate:.0f} '
        "GFLOP/s against 120 in float32)"
    )
    # an explicit bfloat16 is kept; where it is slower, the run is told so with both rates
    chosen, warning = perf.settle_precision("bfloat16", "cpu")
    assert chosen == "bfloat16"
    if bf16_rate >= 120:  # not slower: nothing to warn about, even inside auto's margin
        assert warning is None
    else:
        assert warning.startswith("warning: this CPU multiplies bfloat16 matrices at 20 GFLOP/s against 120")
        assert 'train.precision = "auto"' in warning


def test_float32_and_gpus_are_settled_without_timing_anything(monkeypatch):
    def no_timing(**kwargs):
        raise AssertionError("nothing should be timed")

    monkeypatch.setattr(perf, "matmul_peak_gflops", no_timing)
    assert perf.settle_precision("float32", "cpu") == ("float32", None)
    assert perf.settle_precision("bfloat16", "cuda") == ("bfloat16", None)
    asked = []
    for capability, chosen in [((8, 0), "bfloat16"), ((7, 0), "float32")]:  # an A100; a V100 emulates bfloat16

        def device_capability(device, capability=capability):
            asked.append(device)
            return capability

        monkeypatch.setattr(torch.cuda, "get_device_capability", device_capability)
        assert perf.settle_precision("auto", "cuda:1") == (chosen, f'train.precision = "auto": {chosen} on cuda:1')
    assert asked == [torch.device("cuda", 1)] * 2  # the run's own GPU, not the current one
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        perf.settle_precision("half", "cpu")


def test_auto_precision_context_computes_in_the_settled_precision(monkeypatch):
    x, layer = torch.randn(3, 8), torch.nn.Linear(8, 4)
    for bf16_rate, dtype in [(20.0, torch.float32), (250.0, torch.bfloat16)]:
        fake_rates(monkeypatch, bf16_rate)
        with compute_precision("auto", "cpu"):
            assert layer(x).dtype == dtype


DIGITS_RUN = ["data.name=digits", "train.epochs=1", "model.hidden=[16]", "train.monitor_size=0", "train.device=cpu"]


@pytest.mark.slow
def test_an_auto_run_records_the_precision_it_chose_and_eval_reuses_it(monkeypatch, tmp_path):
    fake_rates(monkeypatch, 20.0)
    lines = []
    cfg = load_config("configs/mnist-ff.toml", [*DIGITS_RUN, "train.precision=auto"])
    summary = train_run(cfg, tmp_path / "run", progress=False, log=lines.append)
    assert 'train.precision = "auto": float32 (this CPU multiplies bfloat16 matrices at 20 GFLOP/s' in "\n".join(lines)
    assert summary["precision"] == "float32"
    saved = load_config(tmp_path / "run" / "config.toml")
    assert saved.train.precision == "float32"  # `fflab eval` and `fflab resume` compute as the run did
    fake_rates(monkeypatch, 250.0)  # were eval to settle "auto" again, it would now take bfloat16
    used, compute_precision = [], perf.compute_precision
    monkeypatch.setattr(perf, "compute_precision", lambda p, device: used.append(p) or compute_precision(p, device))
    assert main(["eval", str(tmp_path / "run")]) == 0
    assert used == ["float32"]
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["test_accuracy"] == summary["test_accuracy"]


def test_a_run_in_slow_bfloat16_says_so_in_its_log(monkeypatch, tmp_path):
    fake_rates(monkeypatch, 20.0)
    lines = []
    cfg = load_config("configs/mnist-ff.toml", [*DIGITS_RUN, "train.precision=bfloat16"])
    summary = train_run(cfg, tmp_path / "run", progress=False, log=lines.append)
    assert any(line.startswith("warning: this CPU multiplies bfloat16 matrices at 20 GFLOP/s") for line in lines)
    assert summary["precision"] == "bfloat16"


def test_every_torch_thread_flushes_denormals_when_set_threads_comes_first():
    script = (
        "import numpy as np, torch\n"
        "from fflab.perf import set_threads\n"
        "x = torch.from_numpy(np.full(4_000_000, 1e-39, dtype=np.float32))\n"  # no torch operation yet
        "print(np.count_nonzero(x.numpy()))\n"  # before the flag: with it, comparisons read denormals as zero
        "assert set_threads(2) == 2\n"
        "print(int((x * 1.0).view(torch.int32).count_nonzero()))\n"  # bits, not values
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["4000000", "0"]  # denormal inputs, every thread's share flushed
