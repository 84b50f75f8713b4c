"""Scaling of layer-parallel FF training on this machine: throughput and per-worker utilisation.

    FFLAB_DATA=../shared/datasets python benchmarks/parallel.py [configs/mnist-hinton.toml] [--steps 60]

For one config, trains `--steps` batches of MNIST (after a warm-up) in each setting:
  single process with 1 thread (the one-worker reference) and with every core;
  pipeline over 1, 2 and 4 workers; data parallel over 2; pipeline x data over 4 (2 x 2).
Workers are local processes with one thread each, joined over gloo on 127.0.0.1. For every worker
it reports the busy share of wall time (not waiting on others) and its CPU seconds per step: on a
machine with fewer cores than workers the wall-clock figures are capped by the cores, while CPU seconds
per step show the work each worker has, and so the speed-up the same split would give with a device per
worker (one step takes as long as the slowest worker's share). Results go to
benchmarks/results/parallel-<config>-<date>-<time>.json (or under --results).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from records import dated_path

from fflab.config import Config, load_config
from fflab.data import load_dataset
from fflab.io import write_json_atomic
from fflab.models import build_model
from fflab.perf import set_threads
from fflab.training.launch import run_local_workers
from fflab.training.parallel import DistributedFFTrainer, ParallelPlan
from fflab.training.trainer import make_trainer

RESULTS = Path(__file__).parent / "results"
WARMUP_STEPS = 5


def measure(cfg: Config, plan: ParallelPlan | None, steps: int, out: str) -> None:
    """Train WARMUP_STEPS then `steps` batches; the first rank writes the figures to `out`."""
    set_threads(cfg.train.threads)
    ds = load_dataset(cfg.data.name, progress=False)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, ds.input_dim, ds.num_classes, input_shape=ds.input_shape)
    if plan is None:
        trainer = make_trainer(model, cfg, progress=False, image_shape=ds.input_shape)
    else:
        trainer = DistributedFFTrainer(model, cfg.train, plan, progress=False, image_shape=ds.input_shape)
    bs = cfg.train.batch_size
    warm, n = WARMUP_STEPS * bs, steps * bs
    trainer.train_epoch(ds.train_x[:warm], ds.train_y[:warm], 1)
    cpu = time.process_time()
    stats = trainer.train_epoch(ds.train_x[warm : warm + n], ds.train_y[warm : warm + n], 1)
    cpu_per_step = torch.tensor([(time.process_time() - cpu) / steps], dtype=torch.float64)
    if plan is not None:
        every = [torch.zeros_like(cpu_per_step) for _ in range(plan.world_size)]
        dist.all_gather(every, cpu_per_step)
        cpu_per_step = torch.cat(every)
        if trainer.rank != 0:
            return
    result = {
        "samples_per_second": round(stats.samples_per_second, 1),
        "worker_busy": stats.extra.get("worker_busy", [1.0]),
        "cpu_seconds_per_step": [round(c, 4) for c in cpu_per_step.tolist()],
        "layers_per_stage": trainer.layer_groups if plan else [list(range(len(model.layers)))],
    }
    Path(out).write_text(json.dumps(result))


def run_setting(cfg: Config, name: str, plan: ParallelPlan | None, threads: int, steps: int) -> dict:
    cfg = with_threads(cfg, threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        if plan is None:
            measure(cfg, None, steps, out)
        else:
            run_local_workers(measure, plan.world_size, (cfg, plan, steps, out), timeout=600)
        result = json.loads(Path(out).read_text())
    workers = plan.world_size if plan else 1
    return {"setting": name, "workers": workers, "threads_per_worker": threads, **result}


def with_threads(cfg: Config, threads: int) -> Config:
    return cfg.with_train(threads=threads)


def modelled(row: dict) -> str:
    value = row.get("modelled_speedup_one_device_per_worker")
    return "-" if value is None else f"{value:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="configs/mnist-hinton.toml")
    parser.add_argument("--steps", type=int, default=60, help="timed training steps per setting (default 60)")
    parser.add_argument("--results", metavar="DIR", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    args = parser.parse_args()
    cfg = load_config(args.config)
    cores = os.cpu_count() or 1
    settings = [
        ("single process, 1 thread", None, 1),
        (f"single process, {cores} threads", None, cores),
        ("pipeline, 1 worker", ParallelPlan.create("pipeline", 1), 1),
        ("pipeline, 2 workers", ParallelPlan.create("pipeline", 2), 1),
        ("pipeline, 4 workers", ParallelPlan.create("pipeline", 4), 1),
        ("data parallel, 2 workers", ParallelPlan.create("data", 2), 1),
        ("pipeline 2 x data 2", ParallelPlan.create("both", 4, stages=2), 1),
    ]
    layers = len(cfg.model.hidden)
    rows = []
    for name, plan, threads in settings:
        if plan is not None and plan.stages > layers:
            print(f"{name}: skipped, the network has {layers} layers", flush=True)
            continue
        row = run_setting(cfg, name, plan, threads, args.steps)
        rows.append(row)
        print(f"{name}: {row['samples_per_second']:,.0f} samples/s, busy {row['worker_busy']}", flush=True)
    one = rows[0]["samples_per_second"]
    single_cpu = rows[0]["cpu_seconds_per_step"][0]
    for row in rows:
        row["speedup_vs_one_worker"] = round(row["samples_per_second"] / one, 2)
        # With a device per worker a step takes as long as the busiest worker's CPU time.
        if row["threads_per_worker"] == 1:
            row["modelled_speedup_one_device_per_worker"] = round(single_cpu / max(row["cpu_seconds_per_step"]), 2)
    write_json_atomic(
        dated_path(args.results, f"parallel-{Path(args.config).stem}"),
        {"config": args.config, "steps": args.steps, "cores": cores, "date": time.strftime("%Y-%m-%d"), "rows": rows},
    )
    print("\n| setting | samples/s | vs 1 worker | busy share per worker | CPU s/step per worker | modelled |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        busy = " / ".join(f"{b:.0%}" for b in r["worker_busy"])
        cpu = " / ".join(f"{c:.3f}" for c in r["cpu_seconds_per_step"])
        print(
            f"| {r['setting']} | {r['samples_per_second']:,.0f} | {r['speedup_vs_one_worker']:.2f}x | {busy} | "
            f"{cpu} | {modelled(r)} |"
        )


if __name__ == "__main__":
    main()
