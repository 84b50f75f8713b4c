"""The speed scripts (time to accuracy, peers, the GPU check's dry run), run end to end on small digits runs."""

import json
import re
import subprocess
import sys

from repo import REPO, config_path


def script(path, *args, timeout=300):
    return subprocess.run([sys.executable, REPO / path, *args], capture_output=True, text=True, timeout=timeout)


def test_time_to_accuracy_counts_training_seconds_up_to_the_first_epoch_at_the_target(tmp_path):
    small = ["--set", "model.hidden=[64]", "--set", "train.threads=1"]
    done = script(
        "benchmarks/time_to_accuracy.py",
        config_path("digits-ff"),
        "--target",
        "0.5",
        *small,
        "--set",
        "train.epochs=3",
        "--baseline",
        config_path("digits-ff"),
        "--baseline-set",
        "model.hidden=[64]",
        "--baseline-set",
        "train.epochs=2",
        "--quick-peaks",
        "--quiet",
        "--results",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "tta-digits-ff-model.hidden_[64]-train.threads_1-train.epochs_3.json").read_text())
    assert record["held_out_samples"] == 360  # the whole digits test set is scored, every epoch
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    assert all(0 <= e["test_accuracy"] <= 1 and e["train_seconds"] > 0 for e in record["epochs"])
    reached = next(e for e in record["epochs"] if e["test_accuracy"] >= 0.5)  # digits: well past 50% in an epoch
    assert record["epoch_to_target"] == reached["epoch"]
    assert record["seconds_to_target"] == reached["cumulative_train_seconds"]
    assert abs(record["epochs"][-1]["cumulative_train_seconds"] - record["train_seconds"]) < 0.01
    assert record["final_accuracy"] == record["epochs"][-1]["test_accuracy"]  # the last scored epoch is the model
    peaks = record["matmul_peak_gflop_per_second"]
    assert peaks["float32"] > 0 and peaks["bfloat16"] > 0
    assert record["seconds_to_target_at_bfloat16_peak"] > 0
    assert record["seed"] == 0 and record["threads"] == 1 and record["torch"] and record["cpu"]
    assert record["git_commit"] and record["date"]
    base = record["baseline"]
    assert base["overrides"] == ["model.hidden=[64]", "train.epochs=2"] and len(base["epochs"]) == 2
    ratio = base["seconds_to_target"] / record["seconds_to_target"]
    assert abs(record["speedup_vs_baseline"] - ratio) < 0.01
    assert re.search(r"^\| digits-ff \| `model.hidden=\[64\]` `train.threads=1` `train.epochs=3` \|", done.stdout, re.M)
    assert f"{record['speedup_vs_baseline']:.2f}x |" in done.stdout


def test_time_to_accuracy_says_when_the_target_is_not_reached(tmp_path):
    done = script(
        "benchmarks/time_to_accuracy.py",
        config_path("digits-ff"),
        "--target",
        "1.0",
        "--set",
        "model.hidden=[16]",
        "--set",
        "train.epochs=1",
        "--quick-peaks",
        "--quiet",
        "--results",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    (written,) = tmp_path.iterdir()
    record = json.loads(written.read_text())
    assert record["seconds_to_target"] is None and record["epoch_to_target"] is None
    assert "not reached in 1 epochs" in done.stdout
    refused = script("benchmarks/time_to_accuracy.py", config_path("digits-ff"), "--set", "train.monitor_size=10")
    assert refused.returncode != 0 and "the monitor is set by this script" in refused.stderr
