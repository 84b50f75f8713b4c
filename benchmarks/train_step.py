"""Training throughput of any config through the real trainer: samples/s and GFLOP/s of a few batches.

    FFLAB_DATA=../shared/datasets python benchmarks/train_step.py configs/cifar10-local-recurrent.toml [...]
        [--steps 10] [--repeats 2] [--set KEY=VALUE ...] [--results DIR]

For each config: the model and trainer as `fflab train` builds them (the config's seed, precision, device and
thread count), two warm-up batches, then the best of --repeats timings of --steps training batches of the training set
(no monitoring, no evaluation). Cheap enough to compare commits: run it in a checkout of each, alternating, on the
same machine. Prints a table row per config.

With --results, also the matrix-multiply peak at the run's precision, measured in the same process, and a record
per config in DIR (train-step-<config>[-overrides]-<date>-<time>.json): the share of that peak and the hours the
config's whole schedule (its epochs over its training images) would take at this rate, with the commit and command.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch
from records import cpu_model, dated_path, git_commit

from fflab.config import load_config, overrides_tag
from fflab.data import load_dataset
from fflab.devices import dataset_to, resolve_device
from fflab.errors import FFLabError
from fflab.io import write_json_atomic
from fflab.models import build_model
from fflab.perf import compute_precision, matmul_peak_gflops, set_threads, settle_precision
from fflab.training.trainer import make_trainer


def step_rate(config: str, steps: int, repeats: int, overrides: list[str], peak: bool = False) -> dict:
    """Best samples/s over `repeats` timings of `steps` training batches, and the GFLOP/s it implies; with `peak`,
    the matmul peak at the run's precision, its share, and the hours of the config's whole schedule."""
    cfg = load_config(config, overrides)
    threads = set_threads(cfg.train.threads)
    device = resolve_device(cfg)
    torch.manual_seed(cfg.train.seed)
    ds = dataset_to(load_dataset(cfg.data.name, progress=False), device)
    shape = ds.input_shape
    model = build_model(
        cfg,
        ds.input_dim,
        ds.num_classes,
        input_shape=shape,
    )
    model.to(device)
    trainer = make_trainer(model, cfg, progress=False, image_shape=shape)
    bs = cfg.train.batch_size
    if len(ds.train_x) < (steps + 2) * bs:
        need = (steps + 2) * bs
        raise SystemExit(f"{config}: --steps {steps} needs {need} training images, the set has {len(ds.train_x)}")
    best = 0.0
    precision = settle_precision(cfg.train.precision, device)[0]
    with compute_precision(precision, device):
        trainer.train_epoch(ds.train_x[: 2 * bs], ds.train_y[: 2 * bs], 1)
        x, y = ds.train_x[2 * bs : (steps + 2) * bs], ds.train_y[2 * bs : (steps + 2) * bs]
        for _ in range(repeats):
            start = time.perf_counter()
            trainer.train_epoch(x, y, 1)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = max(best, len(x) / (time.perf_counter() - start))
    gflop_per_sample = trainer.flops_per_sample() / 1e9
    gflops = gflop_per_sample * best
    result = {
        "config": Path(config).stem,
        "device": str(device),
        "threads": threads,
        "precision": precision,
        "samples_per_second": best,
        "gflop_per_second": gflops,
    }
    if peak:
        if cfg.train.schedule != "simultaneous" or cfg.train.layer_epochs:
            # the timed batches train every layer at once; these schedules train fewer per batch
            raise SystemExit(
                f"{config}: --results times every layer training on every batch, which train.schedule = "
                f"{cfg.train.schedule!r} / train.layer_epochs = {cfg.train.layer_epochs} does not do: its share of "
                "the peak and schedule hours would be wrong. Time it without --results"
            )
        top = matmul_peak_gflops(device=device, precision=precision)
        images = min(cfg.data.train_subset or len(ds.train_x), len(ds.train_x)) - cfg.data.validation
        result |= {
            "matmul_peak_gflop_per_second": round(top, 1),
            "share_of_peak": round(gflops / top, 3),
            "gflop_per_sample": gflop_per_sample,
            "train_images": images,
            "epochs": cfg.train.epochs,
            "schedule_hours": round(images * cfg.train.epochs / best / 3600, 2),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--steps", type=int, default=10, help="training batches per timing (default 10)")
    parser.add_argument("--repeats", type=int, default=2, help="timings; the best counts (default 2)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--results", metavar="DIR", type=Path, help="measure the peak too and write a record here")
    args = parser.parse_args()
    peak = args.results is not None
    print(
        "| config | device | threads | precision | samples/s | GFLOP/s |"
        + (" peak | share | schedule |" if peak else "")
    )
    print("|---|---|---|---|---|---|" + ("---|---|---|" if peak else ""))
    commit, dirty = git_commit()
    for config in args.configs:
        try:
            r = step_rate(config, args.steps, args.repeats, args.set, peak)
        except FFLabError as e:
            raise SystemExit(f"{config}: {e}") from None
        row = (
            f"| {r['config']} | {r['device']} | {r['threads']} | {r['precision']} | {r['samples_per_second']:,.1f} | "
            f"{r['gflop_per_second']:.1f} |"
        )
        if peak:
            row += (
                f" {r['matmul_peak_gflop_per_second']:.0f} | {r['share_of_peak']:.0%} | {r['schedule_hours']:,.1f} h |"
            )
            r |= {
                "benchmark": "train_step",
                "overrides": args.set,
                "command": " ".join(["python", *sys.argv]),
                "commit": commit,
                "dirty": dirty,
                "cpu": cpu_model(),
                "torch": torch.__version__,
                "date": (now := datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            write_json_atomic(dated_path(args.results, f"train-step-{r['config']}{overrides_tag(args.set)}", now), r)
        print(row, flush=True)


if __name__ == "__main__":
    main()
