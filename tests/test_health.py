"""A run that diverges, one that is resumed without being told where its data is, and one stopped by SIGTERM:
each tried on small data, asserting the message, the exit status, and that nothing complete was lost.

docs/reliability.md lists these faults beside those of tests/test_faults.py.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from repo import config_path, shipped_config
from test_data_registry import write_idx_set
from test_faults import QUICK, Stop, leftovers, one_line_error, train_args

import fflab
from fflab import io
from fflab.checkpoint import TRAINING_STATE, WEIGHTS, load_training_state
from fflab.cli import main
from fflab.errors import DivergedError
from fflab.estimator import FFClassifier
from fflab.models import build_model
from fflab.training.health import check_weights
from fflab.training.inputs import INPUTS
from fflab.training.run import train_run
from fflab.training.trainer import make_trainer


def stop_after_first_epoch(line: str) -> None:
    """A log that stops a run when epoch 2 is logged: epoch 1's state is saved, epoch 2's is not."""
    if line.startswith("epoch   2/"):
        raise Stop


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A run of 3 healthy epochs at lr 0.003, stopped after saving epoch 1's state."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    with pytest.raises(Stop):
        train_run(shipped_config("digits-ff", QUICK), run, log=stop_after_first_epoch, progress=False)
    return run


def copy_of(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


# ---- numerical health ----------------------------------------------------------------------------------------


def test_a_run_that_diverges_in_its_first_epoch_is_one_line_and_claims_nothing(tmp_path, capsys):
    """The issue's case (`fflab train configs/digits-ff.toml --set train.lr=1e8 --set train.epochs=3`, made small):
    the loss never becomes NaN, it reaches 1e17 and then every unit falls silent; it used to be reported as
    "test accuracy 10.00%"."""
    run = tmp_path / "run"
    assert main(train_args(run, "train.lr=1e8")) == 2
    line = one_line_error(capsys.readouterr().err)
    assert re.match(
        r"fflab: error: training diverged in epoch 1: layer 0's loss reached [0-9.]+e\+[0-9]+ \(beyond 1e\+12", line
    ), line
    assert line.endswith(
        "; no epoch ended healthy, so there is no state to go on from: train again with a lower learning rate "
        "than train.lr = 1e+08, e.g. `--set train.lr=1e+07`, into a new run directory"
    )
    for result in ("summary.json", WEIGHTS, TRAINING_STATE):  # nothing claims a result
        assert not (run / result).exists()
    assert (run / "metrics.jsonl").read_text() == "" and leftovers(run) == []


def test_a_run_that_diverges_later_keeps_its_last_healthy_state_and_resumes_with_a_lower_lr(
    stopped_run, tmp_path, capsys
):
    run = copy_of(stopped_run, tmp_path)
    state = (run / TRAINING_STATE).read_bytes()
    assert main(["resume", str(run), "--no-progress", "--set", "train.lr=1e8"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert line.startswith("fflab: error: training diverged in epoch 2: layer 0's loss reached "), line
    assert line.endswith(
        f"; the training state after epoch 1 is kept in {run / TRAINING_STATE}: go on from it with a lower learning "
        f"rate, e.g. `fflab resume {run} --set train.lr=1e+07` (train.lr = 1e+08 now)"
    )
    assert (run / TRAINING_STATE).read_bytes() == state  # the diverged epoch saved nothing ...
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # ... nor logged its metrics
    assert not (run / "summary.json").exists() and not (run / WEIGHTS).exists() and leftovers(run) == []

    assert main(["resume", str(run), "--no-progress", "--set", "train.lr=0.001"]) == 0
    assert "resumed after epoch 1" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["changed_on_resume"] == [{"after_epoch": 1, "train.lr": 0.001}]
    assert "lr = 0.001\n" in (run / "config.toml").read_text()  # the run's record says what it went on with
    assert json.loads((run / "model.json").read_text())["config"]["train"]["lr"] == 0.001
    assert not (run / TRAINING_STATE).exists() and leftovers(run) == []


def test_resume_changes_only_the_learning_rate_and_the_epochs(stopped_run, tmp_path, capsys):
    run = copy_of(stopped_run, tmp_path)
    kept = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for setting in ("model.hidden=[64,64]", "train.batch_size=7", "data.name=mnist"):
        assert main(["resume", str(run), "--no-progress", "--set", setting]) == 2
        key = setting.partition("=")[0]
        assert one_line_error(capsys.readouterr().err) == (
            f"fflab: error: --set {key}: a resumed run keeps the settings it was built with; only train.lr and "
            f"train.epochs may change (to change {key}, start a new run with `fflab train`)"
        )
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == kept

    # fewer epochs, down to those done: a run that diverged later can be finished with its last healthy state
    assert main(["resume", str(run), "--no-progress", "--set", "train.epochs=1"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["changed_on_resume"] == [{"after_epoch": 1, "train.epochs": 1}]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_ffclassifier_that_diverges_raises_a_scikit_learn_style_value_error():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    estimator = FFClassifier(hidden=16, epochs=2, lr=1e8)
    with pytest.raises(ValueError) as err:
        estimator.fit(X[:300], y[:300])
    assert re.match(
        r"Floating-point overflow in FFClassifier\.fit: training diverged in epoch 1: layer 0's loss reached "
        r"\S+ \(beyond 1e\+12, which no healthy run reaches\)\. Lowering lr \(now 1e\+08; try 1e\+07\) might help$",
        str(err.value),
    ), str(err.value)
    assert not hasattr(estimator, "model_")  # not fitted
    FFClassifier(hidden=16, epochs=2).fit(X[:300], y[:300])  # the same data trains at the default lr


HEBBIAN = ["data.name=digits", "train.epochs=2", "train.threads=1", "train.monitor_size=100", "spiking.steps=8"]


@pytest.mark.parametrize(
    ("neuron", "lr", "expected"),
    [
        # analog units: the weights overflow and every quantity becomes NaN, the loss first
        ("relu", "1e30", r"layer 0's loss became NaN"),
        # spiking units: the loss stays finite (a spike is a spike however large the input), the weights run away
        ("lif", "1e20", r"layer 0's weights reached \S+ \(beyond 1e\+12"),
    ],
)
def test_a_hebbian_layer_whose_weights_blow_up_stops_the_run(tmp_path, capsys, neuron, lr, expected):
    run = tmp_path / "run"
    sets = [arg for s in (*HEBBIAN, f"hebbian.neuron={neuron}", f"train.lr={lr}") for arg in ("--set", s)]
    assert main(["train", config_path("mnist-hebbian"), "--out", str(run), "--no-progress", *sets]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert re.search(rf"training diverged in epoch 1: {expected}", line), line
    assert "e.g. `--set train.lr=" in line and not (run / "summary.json").exists()


def test_divergence_is_caught_within_an_epoch_and_in_weights_alone():
    cfg = shipped_config("digits-ff", QUICK)
    torch.manual_seed(0)
    model = build_model(cfg, 64, 10)
    trainer = make_trainer(model, cfg, progress=False)
    trainer.check_every = 3
    x, y = torch.rand(320, 64), torch.arange(320) % 10
    x[100:] = float("nan")  # most rows: the first batches hold some (the data checks of a run would refuse them)
    with pytest.raises(
        DivergedError, match=r"in epoch 1 \(checked after step 3 of 10\): layer 0's loss became NaN$"
    ) as err:
        trainer.train_epoch(x, y, 1)
    assert err.value.epoch == 1 and err.value.layer == 0
    again = pickle.loads(pickle.dumps(err.value))  # as a layer-parallel worker passes it on
    assert (str(again), again.epoch, again.layer, again.quantity) == (str(err.value), 1, 0, "loss")

    model = build_model(cfg, 64, 10)
    with torch.no_grad():
        model.layers[1].linear.weight[3, 4] = float("-inf")
    with pytest.raises(DivergedError, match=r"in epoch 7: layer 1's weights \(linear\.weight\) became -infinite$"):
        check_weights(model, 7)


# ---- runs remember their inputs ------------------------------------------------------------------------------


def test_a_run_on_a_relative_data_path_resumes_and_evaluates_from_anywhere(tmp_path, monkeypatch, capsys):
    """data.path = "mine" in config.toml is relative to where the run started; inputs.json has the folder."""
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    write_idx_set(start / "mine", n_train=40, n_test=12)
    elsewhere.mkdir()
    monkeypatch.chdir(start)
    cfg = shipped_config("digits-ff", [*QUICK, 'data.name="idx"', 'data.path="mine"', "train.batch_size=8"])
    run = tmp_path / "run"
    with pytest.raises(Stop):
        train_run(cfg, run, log=stop_after_first_epoch, progress=False)
    assert json.loads((run / INPUTS).read_text())["data_path"] == str(start / "mine")
    assert 'path = "mine"' in (run / "config.toml").read_text()  # the config stays as written

    monkeypatch.chdir(elsewhere)
    assert main(["resume", str(run), "--no-progress"]) == 0
    assert main(["eval", str(run), "--no-progress"]) == 0
    assert json.loads((run / "eval.json").read_text())["dataset"] == "idx"
    assert main(["analyze", str(run), "--out", str(tmp_path / "analysis"), "--no-progress", "--samples", "12"]) == 0
    capsys.readouterr()

    (run / INPUTS).unlink()  # without the record, "mine" is looked for here, and is not here
    assert main(["eval", str(run), "--no-progress"]) == 2
    assert f"files missing in {elsewhere / 'mine'}/" in capsys.readouterr().err


@pytest.fixture
def offline_mnist(tmp_path, monkeypatch, real_data) -> Path:
    """A data directory holding (a link to) the shared MNIST; no other copy reachable, no network."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "mnist").symlink_to(real_data("mnist") / "mnist")
    monkeypatch.delenv("FFLAB_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))  # the default data directory: empty
    monkeypatch.setenv("FFLAB_MIRROR", "http://127.0.0.1:9/")  # a download would fail: nothing listens there
    return data


def test_a_run_started_with_a_data_dir_resumes_and_evaluates_without_it_offline(offline_mnist, tmp_path, capsys):
    """The issue's case: a run started with --data-dir DIR and resumed without it used to download MNIST."""
    small = [*QUICK, 'data.name="mnist"', "data.train_subset=300", "data.test_subset=100", "model.hidden=[32]"]
    run = tmp_path / "run"
    with pytest.raises(Stop):
        train_run(shipped_config("digits-ff", small), run, data_dir=str(offline_mnist), log=stop_after_first_epoch)
    assert json.loads((run / INPUTS).read_text())["data_dir"] == str(offline_mnist)

    assert main(["resume", str(run), "--no-progress"]) == 0
    assert json.loads((run / "summary.json").read_text())["dataset"] == "mnist"
    assert main(["eval", str(run), "--no-progress"]) == 0
    assert not (tmp_path / "empty-cache" / "fflab" / "mnist").exists()  # nothing was downloaded
    capsys.readouterr()

    # told otherwise, it looks where it is told
    assert main(["eval", str(run), "--no-progress", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert str(tmp_path / "nowhere" / "mnist") in capsys.readouterr().err


# ---- SIGTERM -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_mid_epoch_stops_like_ctrl_c_and_resume_continues_exactly(tmp_path, capsys):
    settings = [*QUICK, "train.batch_size=8", "model.hidden=[16,16]"]  # 180 steps an epoch
    whole = tmp_path / "whole"
    train_run(shipped_config("digits-ff", settings), whole, log=lambda line: None, progress=False)

    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(fflab.__file__).parents[1]), "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "fflab", *train_args(run, *settings)]
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            if line.startswith("epoch   1/"):  # "... 0.8s (1,790 samples/s)"
                while not (run / TRAINING_STATE).exists():  # epoch 1's state is saved (whole: written atomically)
                    time.sleep(0.01)
                time.sleep(0.25 * float(re.search(r"([0-9.]+)s \(", line).group(1)))  # into the next epoch
                proc.send_signal(signal.SIGTERM)
                break
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == f"fflab: terminated (SIGTERM); continue with `fflab resume {run}`"
    saved = load_training_state(run)["epoch"]  # 1, unless the machine ran epoch 2 four times faster than epoch 1
    assert saved in (1, 2) and f"epoch   {saved + 1}/" not in out  # stopped in the middle of epoch saved + 1
    assert "Traceback" not in err and leftovers(run) == []

    assert main(["resume", str(run), "--no-progress"]) == 0
    assert f"resumed after epoch {saved}" in capsys.readouterr().out
    assert (run / WEIGHTS).read_bytes() == (whole / WEIGHTS).read_bytes()  # exactly the uninterrupted run
    rows = [[json.loads(line) for line in (r / "metrics.jsonl").open()] for r in (run, whole)]
    untimed = [[{k: v for k, v in row.items() if "second" not in k} for row in r] for r in rows]
    assert untimed[0] == untimed[1]


def test_a_stop_while_a_temporary_file_is_being_made_leaves_none(tmp_path, monkeypatch):
    """The one moment an atomic write could lose track of its temporary file: made, its name not yet returned."""
    real_close = os.close

    def stopped(fd):
        real_close(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(io.os, "close", stopped)
    with pytest.raises(KeyboardInterrupt):
        io.write_text_atomic(tmp_path / "summary.json", "{}")
    monkeypatch.setattr(io.os, "close", real_close)
    assert list(tmp_path.iterdir()) == []


def test_an_embedding_programs_sigterm_handler_is_put_back(tmp_path):
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        assert main(["settings"]) == 0
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
