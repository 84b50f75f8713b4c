"""Worker functions for tests/test_parallel.py: spawned processes import them from here by name."""

import os
import time

import torch
import torch.distributed as dist
from toydata import toy_data

import fflab.training.run as run_module
from fflab import perf
from fflab.config import Config
from fflab.errors import FFLabError
from fflab.models import build_model
from fflab.training.launch import join_group, leave_group
from fflab.training.parallel import DistributedFFTrainer, ParallelPlan
from fflab.training.trainer import FFTrainer

DATA = {"n": 300, "d": 20, "c": 4}


def build(cfg: Config):
    """The toy network, initialised as every rank initialises it (the run's seed)."""
    torch.manual_seed(cfg.train.seed)
    return build_model(cfg, DATA["d"], DATA["c"])


def train_single(cfg: Config) -> dict:
    """Single-process training on one thread: the reference the workers must reproduce."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build(cfg)
        FFTrainer(model, cfg.train, progress=False).fit(*toy_data(**DATA))
        return model.state_dict()
    finally:
        torch.set_num_threads(before)


def train_share(cfg: Config, plan: ParallelPlan, out: str) -> None:
    """One rank's share of a parallel run; rank 0 saves the whole trained network to `out`."""
    torch.set_num_threads(1)
    model = build(cfg)
    trainer = DistributedFFTrainer(model, cfg.train, plan, progress=False)
    trainer.fit(*toy_data(**DATA))
    if trainer.rank == 0:
        torch.save({"state": model.state_dict(), "groups": trainer.layer_groups}, out)


def fail_or_stall(rank: int, world: int, init_method: str, cfg: Config, plan: ParallelPlan, how: str, out: str) -> None:
    """Rank 1 dies (how='die') or goes silent (how='stall') after three steps; rank 0 trains on and
    writes the error it got, and how long it took to get it, to `out`."""
    torch.set_num_threads(1)
    join_group(rank, world, init_method, timeout=5.0)
    x, y = toy_data(**DATA)
    trainer = DistributedFFTrainer(build(cfg), cfg.train, plan, progress=False)
    if rank == 1:
        for _ in range(3):
            trainer.step(x[:25], y[:25])
        if how == "die":
            os._exit(3)
        time.sleep(120)
        return
    start = time.perf_counter()
    try:
        trainer.fit(x, y)
        message = "finished without an error"
    except FFLabError as e:
        message = str(e)
    with open(out, "w") as f:
        f.write(f"{time.perf_counter() - start:.2f}\n{message}")
    leave_group()


def auto_precision_share(cfg: Config, plan: ParallelPlan, run_dir: str, out: str) -> None:
    """One worker of a train.precision = "auto" run in which rank 0 finds bfloat16 slower than float32 and
    every other rank finds it faster; each rank writes the precision it computed in to `out`.<rank>."""
    rank = dist.get_rank()
    rates = {"bfloat16": 20.0 if rank == 0 else 250.0, "float32": 120.0}
    perf.matmul_peak_gflops = lambda precision, **kwargs: rates[precision]
    compute_precision = run_module.compute_precision

    def recording(precision, device):
        with open(f"{out}.{rank}", "w") as f:
            f.write(precision)
        return compute_precision(precision, device)

    run_module.compute_precision = recording
    run_module.train_run(cfg, run_dir, progress=False, parallel=plan, threads=1)
