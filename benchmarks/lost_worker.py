"""How quickly a parallel run stops when a worker is lost (the timings tests/test_parallel.py no longer asserts).

    python benchmarks/lost_worker.py [configs/digits-ff.toml] [--timeout 5] [--repeats 3]

On a two-worker pipeline run of the config's network and data (one thread per worker, 50 epochs so that
training outlasts every case), it measures:
  die:      rank 1 exits after three steps; seconds until rank 0's training stops with its error
  stall:    rank 1 stops answering after three steps; seconds until rank 0 gives up (the group timeout,
            --timeout, bounds it from below)
  launcher: rank 1 exits while rank 0 sleeps; seconds from `run_local_workers` starting both to it raising,
            having stopped rank 0 (this one includes starting the two processes)
When written, the tests held die under 10 s and stall under 15 s (5 s timeout), launcher under 30 s.
Results go to benchmarks/results/lost-worker-<config>-<date>-<time>.json (or under --results).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from records import dated_path

from fflab.config import Config, load_config
from fflab.data import load_dataset
from fflab.errors import FFLabError
from fflab.io import write_json_atomic
from fflab.models import build_model
from fflab.training.launch import free_port, join_group, leave_group, run_local_workers
from fflab.training.parallel import DistributedFFTrainer, ParallelPlan

RESULTS = Path(__file__).parent / "results"
STEPS_BEFORE_LOSS = 3


def lose_a_worker(rank: int, init_method: str, cfg: Config, how: str, timeout: float, out: str) -> None:
    """One rank of the run: rank 1 trains three steps then dies or goes silent; rank 0 trains on and writes
    the seconds until its error (and the error) to `out`."""
    torch.set_num_threads(1)
    plan = ParallelPlan.create("pipeline", 2)
    join_group(rank, 2, init_method, timeout=timeout)
    ds = load_dataset(cfg.data.name, progress=False)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, ds.input_dim, ds.num_classes, input_shape=ds.input_shape)
    trainer = DistributedFFTrainer(model, cfg.train, plan, progress=False, image_shape=ds.input_shape)
    x, y = ds.train_x, ds.train_y
    if rank == 1:
        bs = cfg.train.batch_size
        for _ in range(STEPS_BEFORE_LOSS):
            trainer.step(x[:bs], y[:bs])
        if how == "die":
            os._exit(3)
        time.sleep(timeout + 120)
        return
    start = time.perf_counter()
    try:
        trainer.fit(x, y)
        message = "finished without an error"
    except FFLabError as e:
        message = str(e)
    Path(out).write_text(f"{time.perf_counter() - start:.3f}\n{message}")
    leave_group()


def time_lost_worker(cfg: Config, how: str, timeout: float) -> float:
    ctx = multiprocessing.get_context("spawn")
    init = f"tcp://127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank0.txt")
        procs = [ctx.Process(target=lose_a_worker, args=(r, init, cfg, how, timeout, out)) for r in range(2)]
        for p in procs:
            p.start()
        procs[0].join(timeout + 300)
        for p in procs:
            p.kill()
            p.join()
        seconds, message = Path(out).read_text().split("\n", 1)
    if "lost contact with the other ranks" not in message:
        raise SystemExit(f"{how}: rank 0 did not report the lost worker: {message}")
    return float(seconds)


def exit_on_rank_one() -> None:
    if dist.get_rank() == 1:
        os._exit(7)
    time.sleep(600)  # still running when rank 1 dies: the launcher must stop it


def time_launcher(timeout: float) -> float:
    start = time.perf_counter()
    try:
        run_local_workers(exit_on_rank_one, 2, timeout=timeout)
    except FFLabError:
        return time.perf_counter() - start
    raise SystemExit("launcher: run_local_workers returned although worker 1 failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="configs/digits-ff.toml")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds a rank waits on another (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each case (default 3)")
    parser.add_argument("--results", metavar="DIR", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    args = parser.parse_args()
    cfg = load_config(args.config, ["train.epochs=50", "train.threads=1", "train.monitor_size=0"])
    cases = {
        "die": lambda: time_lost_worker(cfg, "die", args.timeout),
        "stall": lambda: time_lost_worker(cfg, "stall", args.timeout),
        "launcher": lambda: time_launcher(args.timeout),
    }
    rows = []
    for name, measure in cases.items():
        seconds = [round(measure(), 2) for _ in range(args.repeats)]
        rows.append({"case": name, "seconds": seconds, "median": statistics.median(seconds)})
        print(f"{name}: {' / '.join(f'{s:.2f}' for s in seconds)} s", flush=True)
    write_json_atomic(
        dated_path(args.results, f"lost-worker-{Path(args.config).stem}"),
        {
            "config": args.config,
            "timeout": args.timeout,
            "cores": os.cpu_count(),
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "date": time.strftime("%Y-%m-%d"),
            "rows": rows,
        },
    )
    print(f"\n| case | median s (group timeout {args.timeout:g} s) | every run |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['median']:.2f} | {' / '.join(f'{s:.2f}' for s in r['seconds'])} |")


if __name__ == "__main__":
    main()
