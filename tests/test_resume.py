"""A stopped run resumed from its saved training state ends exactly where the uninterrupted run does."""

import json

import pytest
import torch
from repo import config_path, shipped_config

from fflab.checkpoint import TRAINING_STATE, load_training_state
from fflab.cli import main
from fflab.errors import CheckpointError, FFLabError
from fflab.io import fcntl, folder_lock
from fflab.training.run import train_run

QUIET = {"progress": False}


class Stop(Exception):
    """Stands for the process being killed."""


def stop_at_epoch(epoch: int):
    """A log that stops the run when epoch `epoch` is logged: its metrics line is written, its state is not."""

    def log(line: str) -> None:
        if line.startswith(f"epoch {epoch:>3}/"):
            raise Stop

    return log


def assert_same_run(a, b):
    """Same weights, same per-epoch losses, same scores (timings aside)."""
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    rows = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (a, b)]
    assert len(rows[0]) == len(rows[1])
    for ra, rb in zip(*rows, strict=True):
        assert {k: v for k, v in ra.items() if "second" not in k} == {k: v for k, v in rb.items() if "second" not in k}
    sa, sb = (json.loads((run / "summary.json").read_text()) for run in (a, b))
    assert sa["test_accuracy_by_method"] == sb["test_accuracy_by_method"]


CASES = {
    # feed-forward: hard negatives scored by the network, masking noise drawn from the trainer's generator
    "ff": ("digits-ff", "train.epochs=4", "train.negatives=hard", "train.augment_mask=0.2"),
    # stopped in the second layer's phase of the greedy schedule
    "greedy": ("digits-ff", "train.epochs=2", "train.schedule=greedy"),
    # the score bank is refreshed before epochs 1 and 4 only, so resumed epoch 3 needs the saved bank
    "refreshed": (
        "digits-ff",
        "train.epochs=4",
        "train.negatives=hard",
        "train.hard_scores=refreshed",
        "train.refresh_every=3",
    ),
    # recurrent with an online readout (its own optimiser) ranking the negatives
    "recurrent": (
        "digits-ff",
        "model.kind=recurrent",
        "model.hidden=[64,64]",
        "train.epochs=4",
        "train.negatives=hard",
        "train.hard_scores=readout",
        "readout.enabled=true",
        "readout.epochs=2",
    ),
    # bfloat16 dense layers: CastAdam's kept copies are not saved, and are made again from the weights
    "bfloat16-cast-adam": (
        "digits-ff",
        "model.hidden=[64,64]",
        "train.epochs=4",
        "train.negatives=hard",
        "train.optimizer=adamw",
        "train.weight_decay=0.01",
        "train.precision=bfloat16",
    ),
    "backprop": ("digits-ff", "model.kind=backprop", "train.epochs=4"),
    # tiled locally connected products, feed-forward and recurrent
    "local": (
        "digits-ff",
        "model.architecture=local",
        "model.label=channels",
        "model.hidden=[2,2]",
        "model.kernel=3",
        "train.epochs=4",
    ),
    "local-recurrent": (
        "digits-ff",
        "model.kind=recurrent",
        "model.architecture=local",
        "model.hidden=[2,2]",
        "model.kernel=3",
        'recurrent.source_init=["kaiming","kaiming","kaiming"]',
        "train.epochs=4",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_resumed_run_equals_the_uninterrupted_run(tmp_path, case):
    name, *overrides = CASES[case]
    # one thread: small products on two threads crawl when other work shares the cores
    cfg = shipped_config(name, [*overrides, "train.device=cpu", "train.monitor_size=100", "train.threads=1"])
    whole = tmp_path / "whole"
    train_run(cfg, whole, log=lambda s: None, **QUIET)
    assert not (whole / TRAINING_STATE).exists(), "a finished run keeps no training state"

    run = tmp_path / "stopped"
    with pytest.raises(Stop):
        train_run(cfg, run, log=stop_at_epoch(3), **QUIET)
    assert load_training_state(run)["epoch"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3  # epoch 3's line, written before the stop
    logged = []
    summary = train_run(cfg, run, log=logged.append, resume=True, **QUIET)
    assert "resumed after epoch 2" in logged[0]
    assert summary["resumed_after_epochs"] == [2]
    assert not (run / TRAINING_STATE).exists()
    assert_same_run(whole, run)


@pytest.mark.slow
def test_resume_from_the_command_line_and_its_errors(tmp_path, capsys):
    run = tmp_path / "run"
    train = ["train", config_path("digits-ff"), "--out", str(run), "--no-progress", "--set", "train.epochs=3"]
    cfg = shipped_config("digits-ff", ["train.epochs=3", "train.threads=1"])
    with pytest.raises(Stop):
        train_run(cfg, run, log=stop_at_epoch(2), **QUIET)

    assert main(train) == 2
    assert f"holds an unfinished run: continue it with `fflab resume {run}`" in capsys.readouterr().err
    assert main(["resume", str(run), "--no-progress"]) == 0
    assert "resumed after epoch 1" in capsys.readouterr().out
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3

    assert main(["resume", str(run), "--no-progress"]) == 2
    assert "holds a finished run" in capsys.readouterr().err
    assert main(["resume", str(tmp_path / "elsewhere"), "--no-progress"]) == 2
    assert f"no run directory {tmp_path / 'elsewhere'}: it does not exist" in capsys.readouterr().err
    (tmp_path / "elsewhere").mkdir()
    assert main(["resume", str(tmp_path / "elsewhere"), "--no-progress"]) == 2
    assert "is not a run directory: it has no config.toml" in capsys.readouterr().err
    assert main(["resume", str(run / "config.toml"), "--no-progress"]) == 2
    assert "config.toml is a file, not a run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_a_state_saved_for_other_weight_shapes_is_refused_by_name(tmp_path):
    """E.g. a locally connected run saved before fflab tiled its weights: torch would load the optimiser's
    state of the dense layout without complaint and fail inside the next step."""
    cfg = shipped_config(
        "digits-ff",
        ["model.architecture=local", "model.label=channels", "model.hidden=[2,2]", "model.kernel=3", "train.epochs=3"],
    )
    run = tmp_path / "run"
    with pytest.raises(Stop):
        train_run(cfg, run, log=stop_at_epoch(2), **QUIET)
    state = load_training_state(run)
    moments = state["trainer"]["optimizers"][0]["state"][0]
    moments["exp_avg"] = torch.zeros(moments["exp_avg"].numel() + 1)  # a weight of another shape
    torch.save(state, run / TRAINING_STATE)
    with pytest.raises(FFLabError, match=r"does not fit .*'exp_avg' .* another layout of the weights"):
        train_run(cfg, run, log=lambda s: None, resume=True, **QUIET)


def test_runs_that_save_no_state_say_why_they_cannot_resume(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = shipped_config("digits-ff", ["train.epochs=3", "train.checkpoint_every=0", "train.threads=1"])
    with pytest.raises(Stop):
        train_run(cfg, run, log=stop_at_epoch(2), **QUIET)
    assert not (run / TRAINING_STATE).exists()
    assert main(["resume", str(run), "--no-progress"]) == 2
    assert "saved none (train.checkpoint_every = 0" in capsys.readouterr().err


def test_a_damaged_training_state_is_named(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Stop):
        train_run(
            shipped_config("digits-ff", ["train.epochs=3", "train.threads=1"]), run, log=stop_at_epoch(2), **QUIET
        )
    state = run / TRAINING_STATE
    state.write_bytes(state.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"resume\.pt: unreadable training state"):
        load_training_state(run)
    torch.save({"format": "something else"}, state)
    with pytest.raises(CheckpointError, match="not an fflab training state"):
        load_training_state(run)


@pytest.mark.slow
def test_ctrl_c_during_training_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import fflab.training.run as run_module

    real = run_module.train_run

    def interrupted_at_epoch_2(*args, **kwargs):
        def log(line):
            if line.startswith("epoch   2/"):
                raise KeyboardInterrupt

        return real(*args, **{**kwargs, "log": log})

    monkeypatch.setattr(run_module, "train_run", interrupted_at_epoch_2)
    run = tmp_path / "run"
    args = ["train", config_path("digits-ff"), "--out", str(run), "--no-progress", "--set", "train.epochs=3"]
    assert main([*args, "--set", "train.threads=1"]) == 130
    assert f"fflab: interrupted; continue with `fflab resume {run}`" in capsys.readouterr().err
    monkeypatch.setattr(run_module, "train_run", real)
    assert main(["resume", str(run), "--no-progress"]) == 0


@pytest.mark.slow
def test_a_metrics_line_torn_by_the_stop_is_dropped_and_its_epoch_runs_again(tmp_path):
    """Each epoch's line is written before its state is saved, so a torn last line belongs to an unsaved epoch."""
    run = tmp_path / "run"
    cfg = shipped_config("digits-ff", ["train.epochs=3", "train.threads=1"])
    with pytest.raises(Stop):
        train_run(cfg, run, log=stop_at_epoch(2), **QUIET)
    metrics = run / "metrics.jsonl"
    first, second = metrics.read_text().splitlines()
    metrics.write_text(first + "\n" + second[: len(second) // 2])  # the process died while writing epoch 2's line
    train_run(cfg, run, resume=True, log=lambda s: None, **QUIET)
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2, 3]

    torn_inside = tmp_path / "torn-inside"
    with pytest.raises(Stop):
        train_run(cfg, torn_inside, log=stop_at_epoch(3), **QUIET)
    metrics = torn_inside / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0][:10], *lines[1:]]) + "\n")
    with pytest.raises(FFLabError, match=r"metrics\.jsonl: line 1 is not JSON"):
        train_run(cfg, torn_inside, resume=True, log=lambda s: None, **QUIET)


@pytest.mark.slow
@pytest.mark.skipif(fcntl is None, reason="no advisory locks on this platform")
def test_a_run_directory_another_process_works_in_is_refused_untouched(tmp_path, capsys):
    """Two processes in one run directory would interleave their metrics and overwrite each other's state."""
    run = tmp_path / "run"
    cfg = shipped_config("digits-ff", ["train.epochs=3", "train.threads=1"])
    with pytest.raises(Stop):
        train_run(cfg, run, log=stop_at_epoch(2), **QUIET)
    files = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    # Another holder of the lock (flock locks conflict between open files even within one process).
    with folder_lock(run):
        assert main(["resume", str(run), "--no-progress"]) == 2
        assert f"{run} is in use: another fflab process is training in it" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == files

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with folder_lock(fresh), pytest.raises(FFLabError, match="is in use"):
        train_run(cfg, fresh, **QUIET)
    assert not (fresh / "config.toml").exists()
    assert main(["resume", str(run), "--no-progress"]) == 0  # the stopped run above held it only while it ran
