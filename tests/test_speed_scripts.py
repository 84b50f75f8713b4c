"""The speed scripts (time to accuracy, peers, training cost per step, CastAdam's pairing, the GPU check's dry
run), run end to end on small digits runs."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from repo import REPO, config_path, dated_record


def script(path, *args, timeout=300):
    return subprocess.run([sys.executable, REPO / path, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
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
    record = dated_record(tmp_path, "tta-digits-ff-model.hidden_[64]-train.threads_1-train.epochs_3")
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


def bench_module(name):
    """A benchmarks/ script imported as a module (its folder on the path, as when it runs)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    return __import__(name)


def test_time_to_accuracy_says_when_the_target_is_not_reached():
    tta = bench_module("time_to_accuracy")
    record = {"config": "configs/digits-ff.toml", "overrides": [], "precision": "float32", "threads": 2}
    record |= {"target": 1.0, "split": "test", "seconds_to_target": None, "epochs_run": 3}
    record |= {"best_scored_accuracy": 0.9, "final_accuracy": 0.89, "samples_per_second": 1000.0}
    row = tta.markdown_row(record)
    assert row.startswith("| digits-ff | - | float32, 2 threads | 100.00% test | not reached in 3 epochs (best 90.00%)")
    tta.against_peaks(record | {"arithmetic_tflop_to_target": None, "train_gflop_per_second": 10.0}, {"float32": 100})


def test_time_to_accuracy_leaves_the_monitor_to_itself():
    refused = script("benchmarks/time_to_accuracy.py", config_path("digits-ff"), "--set", "train.monitor_size=10")
    assert refused.returncode == 2 and "the monitor is set by this script" in refused.stderr


TINY_PEERS = ["--hidden", "32,32", "--train-subset", "300", "--test-subset", "200", "--epochs", "2", "--no-peaks"]


def test_peers_refuses_unknown_sides_and_bad_sizes(capsys):
    peers = bench_module("peers")
    args = peers.parse_args(["--sides", "fflib, fflab-same", "--hidden", "300,100", "--train-subset", "0"])
    assert args.side_list == ["fflib", "fflab-same"] and args.hidden_sizes == [300, 100] and args.train_subset == 0
    same = peers.fflab_same_overrides(args.hidden_sizes, args)
    assert "model.hidden=[300, 100]" in same and "model.predict_layers=[0, 1]" in same and "train.lr=0.02" in same
    for argv, message in (
        (["--sides", "fflab-same,torchff"], "--sides: unknown ['torchff']"),
        (["--hidden", "2000,x"], "comma-separated layer sizes"),
        (["--test-subset", "-1"], "--train-subset and --test-subset are at least 0"),
    ):
        with pytest.raises(SystemExit) as stopped:
            peers.parse_args(argv)
        assert stopped.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.real_data("mnist")
def test_peers_fflab_sides_run_the_same_network_batch_and_data(tmp_path):
    sides = ["--sides", "fflab-same,fflab-recipe", "--target", "0.2", "--quiet"]
    done = script("benchmarks/peers.py", *TINY_PEERS, *sides, "--results", str(tmp_path))
    assert done.returncode == 0, done.stderr
    record = dated_record(tmp_path, "peers-32x32-b128-e2-n300")
    same, recipe = record["sides"]
    assert [same["side"], recipe["side"]] == ["fflab-same", "fflab-recipe"]
    for side in (same, recipe):
        assert side["train_samples"] == 300 and len(side["epochs"]) == 2 and side["samples_per_second"] > 0
        assert "model.hidden=[32, 32]" in side["overrides"] and "train.batch_size=128" in side["overrides"]
        assert "train.seed=42" in side["overrides"] and "data.test_subset=200" in side["overrides"]
    assert "model.loss=softplus" in same["overrides"] and "model.theta=20.0" in same["overrides"]
    assert "model.loss=softplus" not in recipe["overrides"]  # the recipe keeps its own loss
    assert "time_to_target_vs_fflib" not in same  # no fflib side, no ratios
    assert "| fflab-same | " in done.stdout and "| fflab-recipe | " in done.stdout


@pytest.mark.real_data("mnist")
def test_peers_puts_fflab_beside_fflib_as_ratios(tmp_path):
    pytest.importorskip("fflib", reason="the peer library: pip install --no-deps fflib==0.3.0")
    done = script(
        "benchmarks/peers.py", *TINY_PEERS, "--sides", "fflib,fflab-same", "--quiet", "--results", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    (written,) = tmp_path.iterdir()
    peer, same = json.loads(written.read_text())["sides"]
    assert peer["library"] == "fflib 0.3.0" and peer["train_samples"] == 300 and len(peer["epochs"]) == 2
    assert peer["gflop_per_sample"] == pytest.approx(12 * (794 * 32 + 32 * 32) / 1e9, rel=1e-3)  # its products
    ratio = same["samples_per_second"] / peer["samples_per_second"]
    assert abs(same["samples_per_second_vs_fflib"] - ratio) < 0.01 and peer["samples_per_second_vs_fflib"] == 1.0
    assert re.search(r"^\| fflib \| [\d,]+ \| 1\.00x \|", done.stdout, re.M), done.stdout


@pytest.mark.slow
def test_train_step_records_the_share_of_the_peak_and_the_schedules_hours(tmp_path):
    overrides = ["--set", "train.threads=1", "--set", "data.validation=200"]
    done = script(
        "benchmarks/train_step.py", config_path("digits-ff"), "--steps", "2", *overrides, "--results", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    r = dated_record(tmp_path, "train-step-digits-ff-train.threads_1-data.validation_200")
    assert r["threads"] == 1 and r["precision"] == "float32" and r["overrides"] == overrides[1::2]
    assert r["share_of_peak"] == pytest.approx(r["gflop_per_second"] / r["matmul_peak_gflop_per_second"], abs=1e-3)
    assert r["train_images"] == 1437 - 200 and r["epochs"] == 40
    hours = r["train_images"] * r["epochs"] / r["samples_per_second"] / 3600
    assert (
        r["schedule_hours"] == pytest.approx(hours, abs=0.01) and r["commit"] and r["command"].endswith(str(tmp_path))
    )
    assert f"| digits-ff | cpu | 1 | float32 | {r['samples_per_second']:,.1f} |" in done.stdout


@pytest.mark.slow
def test_cast_adam_pairs_both_ways_of_training_in_bfloat16(tmp_path):
    from fflab.training import cast_adam

    if cast_adam.kernel() is None:
        pytest.skip("no C compiler to build the cast-Adam kernel")
    done = script(
        "benchmarks/cast_adam.py", config_path("digits-ff"), "--steps", "3", "--rounds", "2", "--results", tmp_path
    )
    assert done.returncode == 0, done.stderr
    r = dated_record(tmp_path, "cast-adam-digits-ff")
    rates = r["samples_per_second"]
    assert len(rates["cast_adam"]) == len(rates["autocast_adam"]) == 2 and min(rates["cast_adam"]) > 0
    ratios = [a / b for a, b in zip(rates["cast_adam"], rates["autocast_adam"], strict=True)]
    assert r["ratio_range"] == [round(min(ratios), 3), round(max(ratios), 3)] and r["commit"]
    assert f"paired ratio {r['median_ratio']:.3f}" in done.stdout


@pytest.mark.slow
def test_gpu_check_dry_run_records_each_step_and_a_summary(tmp_path):
    done = script(
        "scripts/gpu_check.py", "--dry-run", "--steps", "env,time-to-accuracy", "--out", str(tmp_path), timeout=200
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "gpu-check.json").read_text())
    assert summary["mode"] == "dry-run" and summary["ok"] and summary["env"]["torch"]
    assert summary["steps"]["time-to-accuracy"]["status"] == "ok"
    record = json.loads((tmp_path / "time-to-accuracy.json").read_text())
    assert record["device"] == "cpu" and record["config"] == "configs/digits-ff.toml" and record["epochs_run"] == 2
    assert "| time-to-accuracy | ok |" in (tmp_path / "gpu-check.log").read_text()
    refused = script("scripts/gpu_check.py", "--steps", "env", "--out", str(tmp_path / "gpu"))
    if not summary["env"]["cuda_available"]:
        assert refused.returncode == 2 and "torch sees no CUDA GPU" in refused.stdout


def test_gpu_check_packs_mnist_and_a_class_balanced_cifar_subset(tmp_path):
    import tarfile

    sys.path.insert(0, str(REPO / "scripts"))
    from gpu_check import pack_data

    source = tmp_path / "source"
    (source / "mnist").mkdir(parents=True)
    (source / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"idx")
    images = tmp_path / "cifar10-jpeg"
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (images / split / name).mkdir(parents=True)
            for k in range(12):
                (images / split / name / f"{k:04d}.jpg").write_bytes(b"jpeg")
    with tarfile.open(source / "cifar10-jpeg.tar", "w") as tar:
        tar.add(images, arcname="cifar10-jpeg")
    pack_data(source, tmp_path / "packed", per_class=10)
    assert (tmp_path / "packed" / "mnist" / "train-images-idx3-ubyte.gz").read_bytes() == b"idx"
    with tarfile.open(tmp_path / "packed" / "cifar10-jpeg.tar") as tar:
        files = [Path(m.name) for m in tar if m.isfile()]
    for split, per_class in (("train", 10), ("test", 2)):
        for name in ("cat", "dog"):
            assert sum(f.parts[1:3] == (split, name) for f in files) == per_class
