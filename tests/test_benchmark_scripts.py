"""Benchmark scripts, run end to end on small digits runs."""

import json
import re
import subprocess
import sys

from repo import REPO, config_path, shipped_config

from fflab.training.run import train_run


def script(name, *args):
    path = REPO / "benchmarks" / f"{name}.py"
    return subprocess.run([sys.executable, path, *args], capture_output=True, text=True, timeout=300)


def digits_run(run_dir, *overrides):
    """A short digits-ff run saved in `run_dir`; its summary."""
    cfg = shipped_config("digits-ff", ["train.monitor_size=0", *overrides])
    return train_run(cfg, run_dir, progress=False, log=lambda s: None)


def test_readout_select_refit_reproduces_the_runs_readout(tmp_path):
    summary = digits_run(
        tmp_path / "run", "train.epochs=3", "readout.enabled=true", "readout.epochs=3", "eval.predict=readout"
    )
    done = script("readout_select", str(tmp_path / "run"), "--threads", "1")
    assert done.returncode == 0, done.stderr
    validation = re.findall(r"validation (\d+\.\d+)%", done.stdout)
    assert len(validation) == 5  # one per setting of the grid, on held-out images of the small set
    # The config's refit retrains the same head on the same frozen features with the same seed.
    run_readout = summary["test_accuracy_by_method"]["readout"]
    assert f"config {{}}: test {run_readout:.2%}\n" in done.stdout, done.stdout
    assert re.search(r"^best on validation .*: test \d+\.\d+%$", done.stdout, re.MULTILINE)


def test_readout_select_rejects_layers_the_model_lacks(tmp_path):
    digits_run(tmp_path / "run", "train.epochs=1")
    no_layers = script("readout_select", str(tmp_path / "run"))
    assert no_layers.returncode != 0 and "name the layers to read out with --layers" in no_layers.stderr
    bad = script("readout_select", str(tmp_path / "run"), "--layers", "5")
    assert bad.returncode != 0 and "--layers [5]: the model has layers 0-1" in bad.stderr


def test_train_benchmark_writes_the_run_summary_and_a_table_row(tmp_path):
    overrides = ["--set", "train.epochs=2", "--set", "train.threads=1"]
    done = script("train", config_path("digits-ff"), *overrides, "--results", str(tmp_path))
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "digits-ff-train.epochs_2-train.threads_1.json").read_text())
    assert result["epochs"] == 2 and result["test_accuracy"] > 0.5  # chance is 10%
    share = result["train_gflop_per_second"] / result["matmul_peak_gflop_per_second"]  # of rounded figures
    assert 0 < result["share_of_peak"] and abs(result["share_of_peak"] - share) < 0.01
    row = f"| digits-ff | digits | {result['test_accuracy']:.2%} | 2 | "
    assert row in done.stdout, done.stdout
