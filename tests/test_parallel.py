"""Layer-parallel training: the plan, and that pipeline / data-parallel workers reproduce single-process
training; a lost worker is a clear error, not a hang. Workers are real processes joined over gloo on
127.0.0.1."""

import json
import multiprocessing
import os
import time

import pytest
import torch
from parallel_workers import auto_precision_share, fail_or_stall, train_share, train_single

import fflab.io
from fflab.cli import main
from fflab.config import Config, ModelSettings, TrainSettings, load_config
from fflab.errors import FFLabError
from fflab.families import get_family
from fflab.training.launch import free_port, run_local_workers
from fflab.training.parallel import ParallelPlan, balance_layers, shard


def toy_config(peer_weight: float = 0.0, **train) -> Config:
    model = ModelSettings(
        hidden=[24, 24, 24, 24], label="concat", goodness="mean_squares", loss="symba", peer_weight=peer_weight
    )
    options = {"epochs": 2, "batch_size": 25, "lr": 0.01, "negatives": "hard", "threads": 1, "monitor_size": 0}
    return Config(model=model, train=TrainSettings(**{**options, **train}))


def test_layers_are_balanced_by_cost():
    # The MNIST 4x2000 network: the first layer (784 inputs) is cheaper than the others.
    assert balance_layers([3.1, 8, 8, 8], 2) == [[0, 1], [2, 3]]
    assert balance_layers([3.1, 8, 8, 8], 4) == [[0], [1], [2], [3]]
    assert balance_layers([1, 1, 1, 9], 2) == [[0, 1, 2], [3]]
    with pytest.raises(FFLabError, match="cannot split 2 layers into 3"):
        balance_layers([1, 1], 3)


def test_plan_maps_ranks_to_stages_and_replicas():
    plan = ParallelPlan.create("both", 4, stages=2)
    assert plan.replicas == 2
    assert [(plan.stage_of(r), plan.replica_of(r)) for r in range(4)] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert plan.rank_of(1, 1) == 3
    assert ParallelPlan.create("pipeline", 3).stages == 3
    assert ParallelPlan.create("data", 3).replicas == 3
    with pytest.raises(FFLabError, match="5 workers cannot form 2"):
        ParallelPlan.create("both", 5, stages=2)
    with pytest.raises(FFLabError, match="needs the number of pipeline stages"):
        ParallelPlan.create("both", 4)


def test_shards_cover_the_batch_once():
    for n, parts in [(100, 4), (7, 3), (2, 2)]:
        rows = [i for k in range(parts) for i in range(n)[shard(n, parts, k)]]
        assert rows == list(range(n))


@pytest.mark.parametrize(
    ("model", "train", "plan", "message"),
    [
        ({"kind": "recurrent"}, {}, ("pipeline", 2), "'recurrent' trains in one process"),
        ({}, {"schedule": "greedy"}, ("pipeline", 2), "greedy schedule"),
        ({}, {"layer_epochs": [5, 10]}, ("pipeline", 2), "layer_epochs"),
        ({}, {"negatives": "hard", "hard_scores": "prediction"}, ("pipeline", 2), "every layer on the first stage"),
        ({}, {"negatives": "hard", "hard_scores": "readout"}, ("data", 2), "online readout"),
        ({"batch_norm": True}, {}, ("data", 2), "batch norm"),
        ({"hidden": [10]}, {}, ("pipeline", 2), "2 pipeline stages need at least as many layers"),
    ],
)
def test_unsupported_parallel_runs_are_refused_clearly(model, train, plan, message):
    with pytest.raises(FFLabError, match=message):
        cfg = Config(model=ModelSettings(**model), train=TrainSettings(**train))
        get_family(cfg.model.kind).check_parallel(cfg, ParallelPlan.create(*plan))


def run_parallel(cfg: Config, plan: ParallelPlan, tmp_path) -> dict:
    out = tmp_path / "trained.pt"
    run_local_workers(train_share, plan.world_size, (cfg, plan, str(out)), timeout=60)
    return torch.load(out)


@pytest.mark.slow
def test_pipeline_reproduces_single_process_training_exactly(tmp_path):
    """Each layer sees the same inputs in the same order as in one process, so the weights are identical."""
    cfg = toy_config()
    result = run_parallel(cfg, ParallelPlan.create("pipeline", 3), tmp_path)
    assert len(result["groups"]) == 3 and sum(result["groups"], []) == [0, 1, 2, 3]
    expected = train_single(cfg)
    for name, value in expected.items():
        assert torch.equal(result["state"][name], value), name


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "workers", "stages", "batch", "peer"),
    [("data", 2, None, 40, 0.0), ("both", 4, 2, 25, 0.0), ("data", 2, None, 25, 0.5)],
)
def test_data_parallel_matches_single_process_within_rounding(tmp_path, mode, workers, stages, batch, peer):
    """Replicas sum share-weighted gradients, which equals the whole batch's gradient up to the order of
    float additions; hard negatives are drawn from the whole batch's scores as in one process, and peer
    normalisation's running means from the whole batch's activities. Batches of 25 split unevenly
    (13 + 12 rows); 300 samples in batches of 40 end with a batch of 20."""
    cfg = toy_config(batch_size=batch, peer_weight=peer)
    result = run_parallel(cfg, ParallelPlan.create(mode, workers, stages), tmp_path)
    expected = train_single(cfg)
    for name, value in expected.items():
        torch.testing.assert_close(result["state"][name], value, rtol=1e-4, atol=1e-4, msg=name)
    moved = max((value - build_untrained(cfg)[name]).abs().max().item() for name, value in expected.items())
    assert moved > 1e-2  # the comparison is between trained networks, not two copies of the initial one


def build_untrained(cfg: Config) -> dict:
    from parallel_workers import build

    return build(cfg).state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["die", "stall"])
def test_a_lost_worker_stops_the_others_with_a_clear_error(tmp_path, how):
    """Rank 1 dies (or stops answering) mid-training: rank 0 gets an error naming what it was doing (after
    the 5 s timeout for a stall) instead of waiting forever. How long it takes: benchmarks/lost_worker.py."""
    cfg, plan = toy_config(epochs=50), ParallelPlan.create("pipeline", 2)
    out = tmp_path / "rank0.txt"
    ctx = multiprocessing.get_context("spawn")
    init = f"tcp://127.0.0.1:{free_port()}"
    procs = [ctx.Process(target=fail_or_stall, args=(r, 2, init, cfg, plan, how, str(out))) for r in range(2)]
    for p in procs:
        p.start()
    procs[0].join(60)
    for p in procs:
        p.kill()
    _, message = out.read_text().split("\n", 1)  # the seconds it took, then the error
    assert "rank 0 (stage 0, replica 0) lost contact with the other ranks while" in message


@pytest.mark.slow
def test_launcher_names_the_worker_that_failed_and_stops_the_others(tmp_path):
    pid_file = tmp_path / "rank0.pid"
    with pytest.raises(FFLabError, match=r"worker 1 of 2 stopped \(exit code 7\)"):
        run_local_workers(exit_on_rank_one, 2, (str(pid_file),), timeout=10)
    with pytest.raises(ProcessLookupError):  # rank 0 was stopped and reaped, not left sleeping
        os.kill(int(pid_file.read_text()), 0)


def exit_on_rank_one(pid_file: str) -> None:
    import torch.distributed as dist

    if dist.get_rank() == 0:
        fflab.io.write_text_atomic(pid_file, str(os.getpid()))
        time.sleep(60)  # still running when rank 1 dies: the launcher must stop it
    while not os.path.exists(pid_file):  # rank 1 exits once rank 0 is known to be running
        time.sleep(0.05)
    os._exit(7)


@pytest.mark.slow
def test_cli_pipeline_run_matches_the_single_process_run(tmp_path, capsys):
    """`fflab train --parallel pipeline --workers 2` on the digits demo: same accuracy and weights as a
    one-process run on one thread, plus the plan and each worker's busy share in the summary."""
    from safetensors.torch import load_file

    common = ["train", "configs/digits-ff.toml", "--no-progress", "--set", "train.epochs=3", "--set", "train.threads=1"]
    common += ["--set", "train.device=cpu"]  # bit-for-bit equality holds on one device
    assert main([*common, "--out", str(tmp_path / "single")]) == 0
    assert main([*common, "--parallel", "pipeline", "--workers", "2", "--out", str(tmp_path / "pipe")]) == 0
    single = json.loads((tmp_path / "single" / "summary.json").read_text())
    pipe = json.loads((tmp_path / "pipe" / "summary.json").read_text())
    assert pipe["test_accuracy"] == single["test_accuracy"]
    assert pipe["parallel"]["layers_per_stage"] == [[0], [1]]
    assert len(pipe["parallel"]["worker_busy"]) == 2
    assert all(0 < b <= 1 for b in pipe["parallel"]["worker_busy"])
    a, b = load_file(tmp_path / "single" / "model.safetensors"), load_file(tmp_path / "pipe" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "workers", "peer"), [("pipeline", "2", "0"), ("both", "4", "0.03")])
def test_bfloat16_parallel_runs_learn_as_the_single_process_run_does(tmp_path, mode, workers, peer):
    """bfloat16 activity crosses between stages (as float32) and peer normalisation's activities between
    replicas; the run scores as one process does, up to bfloat16 rounding."""
    common = ["train", "configs/digits-ff.toml", "--no-progress", "--set", "train.epochs=3", "--set", "train.threads=1"]
    common += ["--set", "train.device=cpu", "--set", "train.precision=bfloat16", "--set", f"model.peer_weight={peer}"]
    stages = ["--stages", "2"] if mode == "both" else []
    assert main([*common, "--out", str(tmp_path / "single")]) == 0
    assert main([*common, "--parallel", mode, *stages, "--workers", workers, "--out", str(tmp_path / "par")]) == 0
    single = json.loads((tmp_path / "single" / "summary.json").read_text())
    par = json.loads((tmp_path / "par" / "summary.json").read_text())
    assert par["precision"] == "bfloat16" and par["parallel"]["mode"] == mode
    assert single["test_accuracy"] > 0.8
    assert abs(par["test_accuracy"] - single["test_accuracy"]) <= 0.03


@pytest.mark.slow
def test_every_worker_of_an_auto_precision_run_computes_in_the_lead_workers_choice(tmp_path):
    """Rank 0 times bfloat16 slower and rank 1 faster: both compute in float32, and config.toml says so."""
    cfg = load_config("configs/digits-ff.toml", ["train.epochs=1", "train.device=cpu", "train.precision=auto"])
    plan, out = ParallelPlan.create("pipeline", 2), tmp_path / "precision"
    run_local_workers(auto_precision_share, 2, (cfg, plan, str(tmp_path / "run"), str(out)), timeout=60)
    assert [(tmp_path / f"precision.{rank}").read_text() for rank in (0, 1)] == ["float32", "float32"]
    assert load_config(tmp_path / "run" / "config.toml").train.precision == "float32"


@pytest.mark.skipif(fflab.io.fcntl is None, reason="no advisory locks on this platform")
def test_a_parallel_run_holds_its_directory_before_it_starts_workers(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with fflab.io.folder_lock(run):  # another process working in it
        args = ["train", "configs/digits-ff.toml", "--no-progress", "--parallel", "pipeline", "--workers", "2"]
        assert main([*args, "--out", str(run)]) == 2
    assert f"{run} is in use" in capsys.readouterr().err
    assert list(run.iterdir()) == []


def test_cli_refuses_parallel_options_without_a_mode(tmp_path, capsys):
    assert main(["train", "configs/digits-ff.toml", "--workers", "2", "--out", str(tmp_path / "r")]) == 2
    assert "add --parallel MODE" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "scores"), [("data", "first_layer"), ("pipeline", "refreshed"), ("both", "refreshed")]
)
def test_cli_runs_with_hard_negatives_finish_and_write_their_summary(tmp_path, mode, scores):
    """The end of a run (plots of sample pairs on rank 0 alone, after the others left) must not need the
    other workers, whatever scores the hard negatives."""
    stages = ["--stages", "2"] if mode == "both" else []
    options = ["--set", "train.epochs=2", "--set", "train.negatives=hard", "--set", f"train.hard_scores={scores}"]
    out = tmp_path / "run"
    args = ["train", "configs/digits-ff.toml", "--no-progress", *options, "--parallel", mode, *stages]
    assert main([*args, "--workers", "4" if mode == "both" else "2", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.5 and summary["parallel"]["mode"] == mode


@pytest.mark.slow
def test_a_batch_too_small_for_the_replicas_is_refused(tmp_path, capfd):
    # 1,437 digits in batches of 1,435 leave a last batch of 2 rows for 3 replicas (a last batch of one row
    # would join the batch before it).
    args = ["train", "configs/digits-ff.toml", "--no-progress", "--set", "train.batch_size=1435"]
    assert main([*args, "--parallel", "data", "--workers", "3", "--out", str(tmp_path / "r")]) == 2
    assert "a batch of 2 rows, too few for 3 data-parallel replicas" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--workers", "0"], "--workers must be at least 1"), (["--workers", "2", "--stages", "2"], "--stages applies")],
)
def test_cli_rejects_bad_worker_options(tmp_path, capsys, extra, message):
    args = ["train", "configs/digits-ff.toml", "--parallel", "pipeline", *extra, "--out", str(tmp_path / "r")]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_missing_data_fails_once_before_any_worker_starts(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("FFLAB_MIRROR", "http://127.0.0.1:9/")  # nothing listens on the discard port
    args = ["train", "configs/mnist-ff.toml", "--data-dir", str(tmp_path / "empty"), "--no-progress"]
    assert main([*args, "--parallel", "pipeline", "--workers", "2", "--out", str(tmp_path / "r")]) == 2
    err = capfd.readouterr().err
    assert "mnist" in err and "worker" not in err
