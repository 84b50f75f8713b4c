"""Benchmark scripts that read a saved run, run end to end on a small one."""

import os
import re
import subprocess
import sys

from fflab.config import load_config
from fflab.training.run import train_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(name, *args):
    path = os.path.join(REPO, "benchmarks", f"{name}.py")
    return subprocess.run([sys.executable, path, *args], capture_output=True, text=True, timeout=300)


def digits_run(run_dir, *overrides):
    """A short digits-ff run saved in `run_dir`; its summary."""
    cfg = load_config(os.path.join(REPO, "configs", "digits-ff.toml"), ["train.monitor_size=0", *overrides])
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
