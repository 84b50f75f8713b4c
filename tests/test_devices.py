"""train.device: spelling and kind checks, resolution on machines with and without a GPU, and (on a CUDA
machine only) a real run on the GPU that matches the CPU run's accuracy."""

import json

import pytest
import torch
from repo import config_path, shipped_config

from fflab.devices import dataset_to, resolve_device
from fflab.errors import ConfigError, FFLabError
from fflab.training.run import train_run

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def digits(*overrides):
    return shipped_config("digits-ff", overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.device=gpu"], "expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
        (["train.device=cuda0"], "got 'cuda0'"),
        (["train.device=cuda", "model.kind=hebbian", "train.negatives=random", "readout.enabled=false"], "CPU only"),
    ],
)
def test_bad_device_settings_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        digits(*overrides)


def test_auto_takes_the_gpu_only_when_there_is_one_and_the_run_can_use_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(digits()) == torch.device("cpu")
    assert resolve_device(digits("train.device=cpu")) == torch.device("cpu")
    with pytest.raises(FFLabError, match="sees no CUDA GPU"):
        resolve_device(digits("train.device=cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device(digits()) == torch.device("cuda", 0)
    assert resolve_device(digits("model.kind=backprop")) == torch.device("cuda", 0)
    recurrent = shipped_config("mnist-recurrent")
    assert resolve_device(recurrent) == torch.device("cpu")  # a kind that runs on the CPU only
    assert resolve_device(digits("data.name=seq-mnist")) == torch.device("cpu")  # rendered on the CPU
    with pytest.raises(ConfigError, match="on 'seq-mnist' runs on the CPU only"):
        digits("data.name=seq-mnist", "train.device=cuda")
    # Parallel workers: one GPU each, so 'auto' falls back to the CPU when there are too few.
    assert resolve_device(digits(), local_rank=1, gpus_needed=2) == torch.device("cuda", 1)
    assert resolve_device(digits(), local_rank=2, gpus_needed=3) == torch.device("cpu")
    assert resolve_device(digits("train.device=cuda:1")) == torch.device("cuda", 1)
    with pytest.raises(FFLabError, match="GPU 2 asked for, but torch sees 2"):
        resolve_device(digits("train.device=cuda"), local_rank=2)


def test_parallel_workers_on_one_named_gpu_are_refused(tmp_path):
    from fflab.training.run import train_parallel

    with pytest.raises(FFLabError, match="would put all 2 workers of this machine on one GPU"):
        train_parallel(digits("train.device=cuda:0"), tmp_path, "pipeline", workers=2)


@pytest.mark.slow
def test_cpu_runs_keep_the_data_set_and_say_where_they_ran(tmp_path):
    cfg = digits("train.epochs=1", "train.monitor_size=0", "train.device=cpu")
    summary = train_run(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    assert summary["device"] == "cpu"
    ds = object()
    assert dataset_to(ds, torch.device("cpu")) is ds


@needs_cuda
def test_a_gpu_run_matches_the_cpu_run(tmp_path):
    """Same seed, same batches and negatives (drawn on the CPU); only float rounding differs."""
    results = {}
    for device in ("cpu", "cuda"):
        cfg = digits("train.epochs=15", f"train.device={device}")
        results[device] = train_run(cfg, tmp_path / device, progress=False, log=lambda s: None)
    assert results["cuda"]["device"].startswith("cuda")
    assert results["cuda"]["test_accuracy"] >= 0.9
    assert abs(results["cuda"]["test_accuracy"] - results["cpu"]["test_accuracy"]) <= 0.02
    saved = json.loads((tmp_path / "cuda" / "summary.json").read_text())
    assert saved["test_accuracy"] == results["cuda"]["test_accuracy"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
@pytest.mark.parametrize("mode", ["pipeline", "data"])
def test_parallel_workers_on_two_gpus_talk_over_nccl(tmp_path, mode):
    from fflab.cli import main

    args = ["train", config_path("digits-ff"), "--no-progress", "--set", "train.epochs=15"]
    args += ["--set", "train.device=cuda", "--parallel", mode, "--workers", "2", "--out", str(tmp_path)]
    assert main(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["device"] == "cuda:0" and summary["test_accuracy"] >= 0.9
