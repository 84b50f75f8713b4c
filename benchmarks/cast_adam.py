"""bfloat16 training with CastAdam against autocast's casts and torch's fused Adam, paired in one process.

    FFLAB_DATA=../shared/datasets python benchmarks/cast_adam.py [configs/mnist-hinton.toml ...] [--steps 40]
        [--rounds 8] [--results DIR]

For each config: two trainers as `fflab train` builds them in bfloat16, one stepping its dense weights with
CastAdam (fflab.training.cast_adam), one as on a machine without a C compiler: autocast casts each weight for its
products and torch's fused Adam steps it. They train the same --steps batches in turn for --rounds rounds, the order
swapped each round, so that a slow spell of a shared machine falls on both. Prints the median samples/s of each
and the median of the per-round ratios with their range; with --results, writes cast-adam-<config>-<date>-<time>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from records import cpu_model, dated_path, git_commit

from fflab.config import load_config
from fflab.data import load_dataset
from fflab.io import write_json_atomic
from fflab.models import build_model
from fflab.perf import compute_precision, set_threads
from fflab.training import cast_adam
from fflab.training.trainer import make_trainer


def build(cfg, ds, fused: bool):
    model = build_model(cfg, ds.input_dim, ds.num_classes, input_shape=ds.input_shape)
    if fused:
        return make_trainer(model, cfg, progress=False, image_shape=ds.input_shape)
    kernel, cast_adam.kernel = cast_adam.kernel, lambda: None  # as on a machine without a C compiler
    try:
        return make_trainer(model, cfg, progress=False, image_shape=ds.input_shape)
    finally:
        cast_adam.kernel = kernel


def compare(config: str, steps: int, rounds: int) -> dict:
    cfg = load_config(config, ["train.precision=bfloat16"])
    threads = set_threads(cfg.train.threads)
    with compute_precision("bfloat16", "cpu"):
        ds = load_dataset(cfg.data.name, progress=False)
        fused, unfused = build(cfg, ds, True), build(cfg, ds, False)
        if not isinstance(fused.optimizers[0], cast_adam.CastAdam):
            sys.exit(f"{config}: its optimiser is not CastAdam here (Adam/AdamW dense layers and a C compiler needed)")
        n = steps * cfg.train.batch_size
        x, y = ds.train_x[:n], ds.train_y[:n]
        for trainer in (fused, unfused):  # warm-up
            trainer.train_epoch(x[: 2 * cfg.train.batch_size], y[: 2 * cfg.train.batch_size], 1)
        rates = {"cast_adam": [], "autocast_adam": []}
        for r in range(rounds):
            pair = [("cast_adam", fused), ("autocast_adam", unfused)]
            for name, trainer in pair if r % 2 == 0 else pair[::-1]:
                rates[name].append(trainer.train_epoch(x, y, 1).samples_per_second)
    ratios = [a / b for a, b in zip(rates["cast_adam"], rates["autocast_adam"], strict=True)]
    return {
        "config": config,
        "steps": steps,
        "rounds": rounds,
        "batch_size": cfg.train.batch_size,
        "threads": threads,
        "samples_per_second": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
        "median_samples_per_second": {k: round(statistics.median(vs), 1) for k, vs in rates.items()},
        "median_ratio": round(statistics.median(ratios), 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", default=["configs/mnist-hinton.toml", "configs/mnist-ff.toml"])
    parser.add_argument("--steps", type=int, default=40, help="training batches per timing (default 40)")
    parser.add_argument("--rounds", type=int, default=8, help="timings of each side (default 8)")
    parser.add_argument("--results", metavar="DIR", type=Path, help="write a record per config here")
    args = parser.parse_args()
    commit, dirty = git_commit()
    for config in args.configs:
        r = compare(config, args.steps, args.rounds)
        med = r["median_samples_per_second"]
        print(
            f"{Path(config).stem}: CastAdam {med['cast_adam']:,.0f} samples/s, autocast casts + torch's Adam "
            f"{med['autocast_adam']:,.0f}; paired ratio {r['median_ratio']:.3f} "
            f"(range {r['ratio_range'][0]:.3f}-{r['ratio_range'][1]:.3f}, {args.rounds} rounds of {args.steps} steps)"
        )
        if args.results:
            record = {
                **r,
                "command": " ".join(["python", *sys.argv]),
                "commit": commit,
                "dirty": dirty,
                "cpu": cpu_model(),
                "date": time.strftime("%Y-%m-%d"),
            }
            write_json_atomic(dated_path(args.results, f"cast-adam-{Path(config).stem}"), record)


if __name__ == "__main__":
    main()
