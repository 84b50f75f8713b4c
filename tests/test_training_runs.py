"""Real training runs: the offline digits default through the CLI, and a short MNIST run."""

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image
from repo import REPO, config_path, shipped_config

from fflab.checkpoint import load_checkpoint
from fflab.cli import main
from fflab.config import config_from_dict, load_config
from fflab.errors import ConfigError, DataError, FFLabError
from fflab.training.data import load_for_config
from fflab.training.evaluate import evaluate
from fflab.training.run import _claim_run_dir, default_run_dir, train_run
from fflab.training.trainer import batch_bounds


def config(name, *overrides):
    return shipped_config(name, overrides)


@pytest.mark.slow
def test_digits_cli_train_then_eval(tmp_path, capsys):
    run = tmp_path / "run"
    cfg_path = config_path("digits-ff")
    assert main(["train", cfg_path, "--out", str(run), "--no-progress", "--set", "train.epochs=15"]) == 0
    names = {p.name for p in run.iterdir()}
    assert {"config.toml", "metrics.jsonl", "summary.json", "model.safetensors", "model.json", "plots"} <= names
    assert {p.name for p in (run / "plots").iterdir()} == {"training_curves.png", "goodness_histograms.png"}
    assert all((run / "plots" / p).stat().st_size > 5000 for p in ("training_curves.png", "goodness_histograms.png"))
    summary = json.loads((run / "summary.json").read_text())
    for key in (
        "dataset",
        "test_accuracy",
        "train_accuracy",
        "epochs",
        "train_seconds",
        "eval_seconds",
        "samples_per_second",
    ):
        assert key in summary, key
    assert summary["dataset"] == "digits" and summary["epochs"] == 15
    assert 0.9 <= summary["test_accuracy"] <= 1.0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 15 and json.loads(lines[-1])["epoch"] == 15
    # The resolved config in the run directory reproduces the override.
    assert load_config(run / "config.toml").train.epochs == 15

    capsys.readouterr()
    assert main(["eval", str(run), "--no-progress"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test_accuracy"] == pytest.approx(summary["test_accuracy"])


@pytest.mark.slow
def test_bfloat16_run_learns_as_float32_does_and_eval_reproduces_its_score(tmp_path, capsys):
    runs = {}
    for precision in ("float32", "bfloat16"):
        cfg = config("digits-ff", "train.epochs=10", "train.monitor_size=0", f"train.precision={precision}")
        runs[precision] = train_run(cfg, tmp_path / precision, progress=False, log=lambda s: None)
    assert runs["bfloat16"]["precision"] == "bfloat16"
    assert runs["bfloat16"]["test_accuracy"] >= 0.9
    assert abs(runs["bfloat16"]["test_accuracy"] - runs["float32"]["test_accuracy"]) <= 0.03
    model, _, _ = load_checkpoint(tmp_path / "bfloat16")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "bfloat16"), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == runs["bfloat16"]["test_accuracy"]


@pytest.mark.slow
def test_same_seed_same_run(tmp_path):
    cfg = config("digits-ff", "train.epochs=3", "train.monitor_size=0", "train.device=cpu")
    a = train_run(cfg, tmp_path / "a", progress=False, log=lambda s: None)
    b = train_run(cfg, tmp_path / "b", progress=False, log=lambda s: None)
    assert a["test_accuracy"] == b["test_accuracy"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_a_runs_first_lines_say_what_trains_and_what_its_epoch_lines_score(tmp_path):
    cfg = shipped_config("digits-ff", ["train.epochs=1", "train.threads=1", "train.monitor_size=100"])
    logged: list[str] = []
    train_run(cfg, tmp_path / "run", progress=False, log=logged.append)
    assert logged[0].startswith("fflab: digits-ff (ff) on digits (1437 train / 360 test), layers [256, 256], 1 epoch,")
    assert ", 1 thread -> " in logged[0]
    note = "the accuracies on epoch lines score the first 100 train and test images (train.monitor_size); "
    assert logged[1] == note + "the final test accuracy scores all 360"


def test_existing_run_dir_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "train",
        config_path("digits-ff"),
        "--out",
        str(run),
        "--no-progress",
        "--set",
        "train.epochs=1",
    ]
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    assert main(["train", config_path("digits-ff"), "--set", "train.epochz=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'train.epochz'" in err and "Traceback" not in err
    assert main(["train", str(tmp_path / "missing.toml")]) == 2
    assert f"config file not found: {tmp_path / 'missing.toml'}" in capsys.readouterr().err


def test_a_misspelled_config_name_gets_the_closest_ready_config(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["train", "mnsit-ff"]) == 2
    err = capsys.readouterr().err
    assert "'mnsit-ff' is neither a file nor a config in ./configs; did you mean 'mnist-ff'?" in err
    assert "digits-ff" in err and "reference/loewex" in err and "Traceback" not in err
    assert main(["train", "loewx"]) == 2
    assert "did you mean 'reference/loewex'?" in capsys.readouterr().err
    assert main(["train", "reference/pezeshky.toml"]) == 2
    assert "did you mean 'reference/pezeshki'?" in capsys.readouterr().err
    assert main(["train", "zzzz"]) == 2
    assert "'zzzz' is neither a file nor a config in ./configs. The configs in ./configs: " in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.real_data("mnist")
def test_short_mnist_run_clears_accuracy_bar(tmp_path):
    cfg = config(
        "mnist-ff",
        "data.train_subset=20000",
        "data.test_subset=2000",
        "train.epochs=3",
        "train.monitor_size=0",
        "eval.train_accuracy=false",
    )
    summary = train_run(cfg, tmp_path / "mnist", progress=False, log=lambda s: None)
    assert summary["dataset"] == "mnist" and summary["test_samples"] == 2000
    assert summary["test_accuracy"] >= 0.90


@pytest.mark.slow
def test_unsupervised_digits_run_with_hybrid_negatives_and_readout(tmp_path):
    cfg = config(
        "digits-ff",
        "model.label=none",
        "train.negatives=hybrid",
        "train.hybrid_blur_steps=2",
        "readout.enabled=true",
        "readout.epochs=30",
        "readout.lr=0.01",
        "eval.predict=readout",
        "train.epochs=10",
    )
    summary = train_run(cfg, tmp_path / "unsup", progress=False, log=lambda s: None)
    assert summary["predict"] == "readout" and set(summary["test_accuracy_by_method"]) == {"readout"}
    assert summary["test_accuracy"] >= 0.85
    assert "test_accuracy" not in json.loads((tmp_path / "unsup" / "metrics.jsonl").read_text().splitlines()[0])


@pytest.mark.slow
def test_backprop_digits_run_and_reload(tmp_path, capsys):
    run = tmp_path / "bp"
    cfg = config("digits-ff", "model.kind=backprop", "train.epochs=10")
    summary = train_run(cfg, run, progress=False, log=lambda s: None)
    assert summary["model"] == "backprop" and summary["test_accuracy"] >= 0.9
    assert not (run / "plots" / "goodness_histograms.png").exists()
    assert main(["eval", str(run), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == summary["test_accuracy"]


@pytest.mark.slow
def test_greedy_digits_run(tmp_path):
    cfg = config("digits-ff", "train.schedule=greedy", "train.epochs=8")
    summary = train_run(cfg, tmp_path / "greedy", progress=False, log=lambda s: None)
    assert summary["epochs"] == 16 and summary["test_accuracy"] >= 0.85


@pytest.mark.slow
def test_recurrent_digits_run_writes_time_plots_and_reloads(tmp_path, capsys):
    run = tmp_path / "rec"
    cfg = config(
        "digits-ff",
        "model.kind=recurrent",
        "model.hidden=[128,128]",
        "train.epochs=5",
        "train.negatives=hard",
        "train.hard_scores=readout",
        "readout.enabled=true",
        "readout.lr=0.01",
    )
    logged = []
    summary = train_run(cfg, run, progress=False, log=logged.append)
    assert summary["model"] == "recurrent"
    assert sum(line.startswith("readout epoch") for line in logged) == cfg.readout.epochs  # refit after FF training
    # Measured: goodness 83.1%, readout 93.1% after 5 epochs (online readout, then refit on frozen features);
    # 83.1% and 92.5% after 10.
    assert summary["test_accuracy_by_method"]["goodness"] >= 0.75
    assert summary["test_accuracy_by_method"]["readout"] >= 0.85
    plots = {p.name for p in (run / "plots").iterdir()}
    assert {"goodness_over_time.png", "activity_over_time.png", "training_curves.png"} <= plots
    assert main(["eval", str(run), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == summary["test_accuracy"]


@pytest.mark.slow
def test_validation_run_holds_out_the_last_training_samples_in_place_of_the_test_set(tmp_path):
    full = load_for_config(config("digits-ff"), None, progress=False)
    cfg = config("digits-ff", "data.validation=300", "train.epochs=8")
    held = load_for_config(cfg, None, progress=False)
    n = len(full.train_x)
    assert torch.equal(held.train_x, full.train_x[: n - 300]) and torch.equal(held.train_y, full.train_y[: n - 300])
    assert torch.equal(held.test_x, full.train_x[n - 300 :]) and torch.equal(held.test_y, full.train_y[n - 300 :])

    lines = []
    summary = train_run(cfg, tmp_path / "val", progress=False, log=lines.append)
    assert summary["train_samples"] == n - 300 and summary["validation_samples"] == 300
    assert not [key for key in summary if key.startswith("test")]
    assert summary["validation_accuracy"] >= 0.85
    model, _, _ = load_checkpoint(tmp_path / "val")
    again = evaluate(model, held.test_x, held.test_y, cfg.eval.batch_size, summary["predict"])
    assert again["accuracy"] == summary["validation_accuracy"]
    last_epoch = json.loads((tmp_path / "val" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "validation_accuracy" in last_epoch and "test_accuracy" not in last_epoch
    assert lines[-1].startswith("validation accuracy") and "300 validation" in lines[0]
    assert main(["eval", str(tmp_path / "val"), "--no-progress"]) == 0  # re-scores the held-out rows, as named
    assert json.loads((tmp_path / "val" / "eval.json").read_text())["validation_accuracy"] == again["accuracy"]


def test_validation_sizes_that_leave_nothing_to_train_on_are_named():
    with pytest.raises(ConfigError, match="never reads the test set"):
        config("digits-ff", "data.validation=100", "data.test_subset=50")
    with pytest.raises(
        ConfigError, match="data.validation = 100 leaves no training samples of data.train_subset = 100"
    ):
        config("digits-ff", "data.train_subset=100", "data.validation=100")
    with pytest.raises(FFLabError, match="data.validation = 5000 leaves no training samples of the 1437 there are"):
        load_for_config(config("digits-ff", "data.validation=5000"), None, progress=False)


def test_two_runs_cannot_share_a_directory_and_default_names_do_not_collide(tmp_path, monkeypatch):
    cfg = config("digits-ff", "train.epochs=1")
    run = tmp_path / "run"
    run.mkdir()
    _claim_run_dir(run, cfg)  # the first of two runs started on one directory at once
    with pytest.raises(FFLabError, match="already holds a run"):
        _claim_run_dir(run, cfg)
    with pytest.raises(FFLabError, match="already holds a run"):  # a run still in its first epoch
        train_run(cfg, run, progress=False, log=lambda s: None)
    assert load_config(run / "config.toml") == cfg and sorted(p.name for p in run.iterdir()) == ["config.toml"]

    monkeypatch.setattr(time, "strftime", lambda fmt: "20261127-120000")
    first, second = default_run_dir(cfg, tmp_path), default_run_dir(cfg, tmp_path)  # made as they are named
    assert (first.name, second.name) == ("digits-ff-20261127-120000", "digits-ff-20261127-120000-2")
    assert first.is_dir() and second.is_dir()


def test_a_last_batch_of_one_row_joins_the_batch_before_it():
    assert batch_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(9, 4) == [(0, 4), (4, 9)]
    assert batch_bounds(1, 4) == [(0, 1)] and batch_bounds(8, 4) == [(0, 4), (4, 8)]
    assert batch_bounds(3, 1) == [(0, 1), (1, 2), (2, 3)]  # online learning keeps one row per update
    with pytest.raises(ConfigError, match="hybrid negatives mix two images of a batch"):
        config("digits-ff", "model.label=none", "train.negatives=hybrid", "eval.predict=readout", "train.batch_size=1")


@pytest.mark.slow
def test_hybrid_negatives_train_when_the_rows_leave_one_over(tmp_path):
    """1409 digits in batches of 32 leave one row, which cannot be mixed with another into a hybrid."""
    cfg = config(
        "digits-ff",
        "data.train_subset=1409",
        "model.label=none",
        "train.negatives=hybrid",
        "readout.enabled=true",
        "eval.predict=readout",
        "train.epochs=1",
        "train.monitor_size=0",
    )
    summary = train_run(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    assert summary["train_samples"] == 1409
    (epoch,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(epoch["loss"])), epoch["loss"]  # the lone last row must not poison a layer's loss


def test_a_data_set_with_one_class_is_refused_by_name(tmp_path):
    for split in ("train", "test"):
        folder = tmp_path / "one" / split / "cat"
        folder.mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(folder / "0.png")
    cfg = config_from_dict({"data": {"name": "image-folder", "path": str(tmp_path / "one")}})
    with pytest.raises(DataError, match="holds 1 class; Forward-Forward needs at least two"):
        load_for_config(cfg, None, progress=False)
