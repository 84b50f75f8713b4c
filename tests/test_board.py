"""train.tensorboard: a run writes its per-epoch scalars and goodness histograms for TensorBoard, read back here."""

import json
import sys

import pytest
from repo import shipped_config

from fflab.errors import FFLabError
from fflab.training.run import train_run


def short_run(path, *overrides):
    cfg = shipped_config("digits-ff", ["train.epochs=2", "model.hidden=[32, 32]", "train.monitor_size=100", *overrides])
    return train_run(cfg, path, progress=False, log=lambda s: None)


def read_events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    return events


def test_tensorboard_event_file_holds_per_layer_scalars_and_goodness_histograms(tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    short_run(run, "train.tensorboard=true")
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    events = read_events(run / "tensorboard")
    scalars = set(events.Tags()["scalars"])
    for tag in ("loss/layer0", "loss/layer1", "goodness_pos/layer1", "goodness_neg/layer0", "lr", "test_accuracy"):
        assert tag in scalars, sorted(scalars)
    assert {"test_accuracy_per_layer/layer0", "train_accuracy", "samples_per_second"} <= scalars
    assert [e.step for e in events.Scalars("loss/layer0")] == [1, 2]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for event, row in zip(events.Scalars("test_accuracy"), metrics, strict=True):
        assert event.value == pytest.approx(row["test_accuracy"])
    histograms = set(events.Tags()["histograms"])
    assert {"goodness_true/layer0", "goodness_wrong/layer1"} <= histograms
    true = events.Histograms("goodness_true/layer1")[-1].histogram_value
    wrong = events.Histograms("goodness_wrong/layer1")[-1].histogram_value
    assert (true.num, wrong.num) == (100, 900)  # 100 monitored samples: one true label, nine wrong ones each
    assert true.sum / true.num > wrong.sum / wrong.num  # a trained layer scores the true label higher


def test_backprop_runs_log_scalars_without_histograms_and_runs_without_the_switch_log_nothing(tmp_path):
    pytest.importorskip("tensorboard")
    short_run(tmp_path / "bp", "model.kind=backprop", "train.tensorboard=true")
    events = read_events(tmp_path / "bp" / "tensorboard")
    assert "loss/layer0" in events.Tags()["scalars"] and not events.Tags()["histograms"]
    short_run(tmp_path / "plain")
    assert not (tmp_path / "plain" / "tensorboard").exists()


def test_missing_tensorboard_package_is_named_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(FFLabError, match=r"pip install 'fflab\[tensorboard\]'"):
        short_run(tmp_path / "run", "train.tensorboard=true")
    assert not (tmp_path / "run" / "metrics.jsonl").read_text()
