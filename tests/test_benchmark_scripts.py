"""Benchmark scripts, run end to end on small digits runs."""

import json
import re
import subprocess
import sys

import pytest
from repo import REPO, config_path, dated_record, shipped_config

from fflab.training.run import train_run

pytestmark = pytest.mark.slow  # each runs a benchmark script in a new process, most of them training


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


def test_train_benchmark_writes_a_record_and_a_table_row(tmp_path):
    overrides = ["--set", "train.epochs=2", "--set", "train.threads=1", "--set", "train.seed=3"]
    done = script("train", config_path("digits-ff"), *overrides, "--results", str(tmp_path))
    assert done.returncode == 0, done.stderr
    (written,) = tmp_path.iterdir()
    assert re.fullmatch(r"digits-ff-train.epochs_2-train.threads_1-train.seed_3-\d{8}-\d{6}\.json", written.name)
    record = json.loads(written.read_text())
    metrics, run = record["metrics"], record["run"]
    assert run["epochs"] == 2 and metrics["test_accuracy"] > 0.5  # chance is 10%
    share = run["train_gflop_per_second"] / run["matmul_peak_gflop_per_second"]  # of rounded figures
    assert 0 < run["share_of_peak"] and abs(run["share_of_peak"] - share) < 0.01
    assert record["format"] == "fflab-benchmark-record/1" and record["config"] == "digits-ff"
    assert record["config_file"] == "configs/digits-ff.toml" and record["overrides"] == overrides[1::2]
    assert record["seed"] == 3 and record["threads"] == 1 and record["precision"] == "float32"
    assert record["device"] == "cpu" and record["cpu"] and record["torch"] and record["fflab_version"]
    assert record["imported"] is False and record["source"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["date"])
    assert record["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", record["commit"])
    row = f"| digits-ff | digits | {metrics['test_accuracy']:.2%} | 2 | "
    assert row in done.stdout, done.stdout


def test_train_benchmark_records_a_finished_run_directory_only_with_the_settings_it_ran(tmp_path):
    overrides = ["train.epochs=2", "train.threads=1", "train.monitor_size=0"]
    summary = digits_run(tmp_path / "run", "train.epochs=2", "train.threads=1")
    results = tmp_path / "results"
    sets = [a for o in overrides for a in ("--set", o)]
    done = script("train", config_path("digits-ff"), *sets, "--from-run", str(tmp_path / "run"), "--results", results)
    assert done.returncode == 0, done.stderr
    (written,) = results.iterdir()
    record = json.loads(written.read_text())
    assert record["overrides"] == overrides and record["metrics"]["test_accuracy"] == summary["test_accuracy"]
    assert record["run"]["train_seconds"] == summary["train_seconds"] and record["run"]["epochs"] == 2
    assert "recorded at" in record["run"]["recorded_from"] and record["run"]["share_of_peak"] is None

    # other settings than the run's: nothing is written, and the message names the setting
    wrong = script(
        "train", config_path("digits-ff"), *sets[:-2], "--from-run", str(tmp_path / "run"), "--results", results
    )
    assert wrong.returncode != 0 and "train.monitor_size" in wrong.stderr, wrong.stderr
    assert len(list(results.iterdir())) == 1
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    stopped = script("train", config_path("digits-ff"), "--from-run", str(unfinished), "--results", results)
    assert stopped.returncode != 0 and "no summary.json" in stopped.stderr


def test_train_benchmark_marks_a_validation_runs_accuracy(tmp_path):
    overrides = ["--set", "train.epochs=2", "--set", "train.threads=1", "--set", "data.validation=300"]
    done = script("train", config_path("digits-ff"), *overrides, "--results", str(tmp_path))
    assert done.returncode == 0, done.stderr
    (written,) = tmp_path.iterdir()
    record = json.loads(written.read_text())
    assert "test_accuracy" not in record["metrics"] and record["run"]["validation_samples"] == 300
    validation = record["metrics"]["validation_accuracy"]
    assert f"| digits-ff | digits | {validation:.2%} (validation) | 2 | " in done.stdout


def test_speed_benchmark_scores_all_labels_in_one_batch_as_the_naive_loop_does(tmp_path):
    done = script("speed", config_path("digits-ff"), "--steps", "3", "--results", str(tmp_path))
    assert done.returncode == 0, done.stderr
    result = dated_record(tmp_path, "speed-digits-ff")
    assert result["all_labels_matches_naive"] == 1.0  # the batched candidates predict what one pass per label does
    assert result["naive_over_all_labels_arithmetic"] > 1  # ... with fewer products: the first layer is shared
    assert result["train_steps"] == 3 and result["train_samples_per_second"] > 0
    assert set(result["seconds_per_10k"]) == {"forward", "readout", "all_labels", "naive"}
    assert "| digits-ff | " in done.stdout


def test_speed_benchmark_runs_at_the_precision_it_is_given(tmp_path):
    done = script(
        "speed",
        config_path("digits-ff"),
        "--steps",
        "3",
        "--set",
        "train.precision=bfloat16",
        "--results",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    result = dated_record(tmp_path, "speed-digits-ff-train.precision_bfloat16")
    assert result["precision"] == "bfloat16" and result["matmul_peak_gflop_per_second"] > 0


def test_untrained_control_fits_the_readout_on_random_layers(tmp_path):
    overrides = ["--set", "readout.enabled=true", "--set", "readout.epochs=5"]
    done = script("untrained_control", config_path("digits-ff"), *overrides, "--results", str(tmp_path))
    assert done.returncode == 0, done.stderr
    result = dated_record(tmp_path, "digits-ff-readout.enabled_true-readout.epochs_5-untrained")
    assert result["ff_epochs"] == 0 and 0.5 < result["readout_test_accuracy"] <= 1  # random features carry digits
    assert f"untrained + readout: test {result['readout_test_accuracy']:.2%}" in done.stdout
    no_readout = script("untrained_control", config_path("digits-ff"), "--results", str(tmp_path))
    assert no_readout.returncode != 0 and "set readout.enabled = true" in no_readout.stderr


def test_parallel_benchmark_splits_the_layers_over_workers_and_reports_each_worker(tmp_path):
    done = script("parallel", config_path("digits-ff"), "--steps", "3", "--results", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "pipeline, 4 workers: skipped, the network has 2 layers" in done.stdout
    result = dated_record(tmp_path, "parallel-digits-ff")
    rows = {row["setting"]: row for row in result["rows"]}
    assert set(rows) == {
        "single process, 1 thread",
        f"single process, {result['cores']} threads",
        "pipeline, 1 worker",
        "pipeline, 2 workers",
        "data parallel, 2 workers",
        "pipeline 2 x data 2",
    }
    for row in rows.values():
        assert len(row["cpu_seconds_per_step"]) == row["workers"] and row["samples_per_second"] > 0
        assert sorted(sum(row["layers_per_stage"], [])) == [0, 1]  # every layer trains in exactly one stage
    assert rows["pipeline, 2 workers"]["layers_per_stage"] == [[0], [1]]
    assert len(rows["pipeline 2 x data 2"]["worker_busy"]) == 4
    assert rows["single process, 1 thread"]["speedup_vs_one_worker"] == 1.0


def test_resume_cost_writes_and_measures_a_training_state(tmp_path):
    done = script("resume_cost", config_path("digits-ff"), "--set", "model.hidden=[64]", "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    # 8x8 digits + 10 label values into 64 units: 4,800 weights and biases, twice more for Adam's moments
    mb = float(re.search(r"digits-ff.toml: (\d+\.\d+) MB in \d+\.\d+ s", done.stdout).group(1))
    assert 0.055 < mb < 0.1, done.stdout  # 57.6 kB of float32 tensors, plus the file's structure
    assert not list(tmp_path.iterdir()), "the temporary state is removed"


def test_train_step_benchmark_times_a_recurrent_local_config():
    overrides = ["--set", "model.kind=recurrent", "--set", "model.architecture=local", "--set", "model.hidden=[2,2]"]
    overrides += ["--set", "model.kernel=3", "--set", 'recurrent.source_init=["kaiming","kaiming","kaiming"]']
    overrides += ["--set", "train.threads=1"]
    done = script("train_step", config_path("digits-ff"), "--steps", "2", "--repeats", "1", *overrides)
    assert done.returncode == 0, done.stderr
    row = re.search(r"^\| digits-ff \| cpu \| 1 \| float32 \| ([\d,]+\.\d) \| (\d+\.\d) \|$", done.stdout, re.MULTILINE)
    assert row and float(row[1].replace(",", "")) > 0 and float(row[2]) > 0, done.stdout
