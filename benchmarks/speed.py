"""Single-process speed of the MNIST FF networks: training throughput against the matmul peak, and
prediction time per 10,000 images by each method.

    FFLAB_DATA=../shared/datasets python benchmarks/speed.py [configs/mnist-hinton.toml ...] [--steps 100]
        [--set train.precision=bfloat16 ...]

For each config: the matmul peak at its `train.precision` (measured in this process), `--steps` training steps through
the real trainer loop (samples/s, GFLOP/s and the share of the peak), then on 10,000 test images
  forward  - one pass with a neutral label through every layer (the floor any method pays),
  readout  - the one-pass linear readout (Hinton 2022, 3.3),
  all-labels - goodness for every candidate label, as fflab predicts (first layer shared, candidates batched),
  naive    - the same scores from one full forward pass per label (what simple implementations do).
The arithmetic ratio naive/all-labels counts matrix-multiply FLOPs only. Results go to
benchmarks/results/speed-<config>[-overrides]-<date>-<time>.json (or under --results).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from records import dated_path, git_commit

from fflab.config import load_config, overrides_tag
from fflab.data import load_dataset
from fflab.io import write_json_atomic
from fflab.models import build_model
from fflab.perf import compute_precision, matmul_peak_gflops, set_threads, settle_precision
from fflab.training.trainer import make_trainer

RESULTS = Path(__file__).parent / "results"


@torch.no_grad()
def naive_label_scores(model, x: torch.Tensor) -> torch.Tensor:
    """[N, C, L] goodness scores by a full forward pass per candidate label (the reference)."""
    per_label = []
    for c in range(model.num_classes):
        labels = torch.full((len(x),), c, dtype=torch.long)
        h = model.embedding.embed(x, labels)
        scores = []
        for layer in model.layers:
            h = layer(h)
            scores.append(layer.positive_score(layer.goodness(h)))
        per_label.append(torch.stack(scores, 1))
    return torch.stack(per_label, 1)


def seconds_per_run(fn, repeats: int = 3) -> float:
    """Best of `repeats` timings of fn() after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def in_chunks(fn, x: torch.Tensor, batch: int):
    return lambda: [fn(x[i : i + batch]) for i in range(0, len(x), batch)]


def bench(config: str, steps: int, data_dir: str | None, overrides: list[str]) -> dict:
    cfg = load_config(config, ["readout.enabled=true", *overrides])
    threads = set_threads(cfg.train.threads)
    precision = settle_precision(cfg.train.precision, "cpu")[0]
    cfg = cfg.with_train(precision=precision)
    with compute_precision(precision, "cpu"):
        return measure(cfg, config, steps, data_dir, threads)


def measure(cfg, config: str, steps: int, data_dir: str | None, threads: int) -> dict:
    ds = load_dataset(cfg.data.name, data_dir=data_dir, progress=False)
    model = build_model(
        cfg,
        ds.input_dim,
        ds.num_classes,
        input_shape=ds.input_shape,
    )
    trainer = make_trainer(model, cfg, progress=False, image_shape=ds.input_shape)
    peak = matmul_peak_gflops(precision=cfg.train.precision)

    bs = cfg.train.batch_size
    warm = 5 * bs
    trainer.train_epoch(ds.train_x[:warm], ds.train_y[:warm], 1)
    stats = trainer.train_epoch(ds.train_x[warm : warm + steps * bs], ds.train_y[warm : warm + steps * bs], 1)
    train_gflops = trainer.flops_per_sample() * stats.samples_per_second / 1e9

    model.eval()
    x = ds.test_x[:10000]
    batch = cfg.eval.batch_size
    neutral_forward = in_chunks(lambda b: model.activities(model.embedding.neutral(b)), x, batch)
    readout = in_chunks(lambda b: model.readout(model.readout_features(b)), x, batch)
    all_labels = in_chunks(model.label_scores, x, batch)
    naive = in_chunks(lambda b: naive_label_scores(model, b), x, batch)
    with torch.no_grad():
        fast, slow = model.label_scores(x[:batch]), naive_label_scores(model, x[:batch])
        agree = (fast.sum(2).argmax(1) == slow.sum(2).argmax(1)).float().mean().item()
        times = {
            name: seconds_per_run(fn)
            for name, fn in [
                ("forward", neutral_forward),
                ("readout", readout),
                ("all_labels", all_labels),
                ("naive", naive),
            ]
        }
        rows = x[:2].flatten(1)
        products_dtype = str(torch.mm(rows, rows.t()).dtype).removeprefix("torch.")  # as autocast ran them
    dense = [layer.forward_flops() for layer in model.layers]
    c = model.num_classes
    return {
        "config": config,
        "threads": threads,
        "precision": products_dtype,
        "matmul_peak_gflop_per_second": round(peak, 1),
        "train_steps": steps,
        "batch_size": bs,
        "train_samples_per_second": round(stats.samples_per_second, 1),
        "train_gflop_per_second": round(train_gflops, 1),
        "share_of_peak": round(train_gflops / peak, 3),
        "seconds_per_10k": {k: round(v * 10000 / len(x), 4) for k, v in times.items()},
        "readout_over_forward": round(times["readout"] / times["forward"], 3),
        "naive_over_all_labels": round(times["naive"] / times["all_labels"], 3),
        "naive_over_all_labels_arithmetic": round(c * sum(dense) / (dense[0] + c * sum(dense[1:])), 3),
        "all_labels_matches_naive": agree,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", default=["configs/mnist-ff.toml", "configs/mnist-hinton.toml"])
    parser.add_argument("--steps", type=int, default=100, help="training steps to time (default 100)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data-dir")
    parser.add_argument("--results", metavar="DIR", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    args = parser.parse_args()
    print(
        "| config | train samples/s | GFLOP/s / peak | forward | readout | all labels | naive loop "
        "| naive / all labels (arithmetic) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for config in args.configs:
        r = bench(config, args.steps, args.data_dir, args.set)
        commit, dirty = git_commit()
        r.update(command=" ".join(["python", *sys.argv]), commit=commit, dirty=dirty)
        write_json_atomic(dated_path(args.results, f"speed-{Path(config).stem}{overrides_tag(args.set)}"), r)
        t = r["seconds_per_10k"]
        print(
            f"| {Path(config).stem} | {r['train_samples_per_second']:,.0f} | {r['train_gflop_per_second']:.0f} / "
            f"{r['matmul_peak_gflop_per_second']:.0f} ({r['share_of_peak']:.0%}) | {t['forward']:.2f} s | "
            f"{t['readout']:.2f} s ({r['readout_over_forward']:.2f}x) | {t['all_labels']:.2f} s | {t['naive']:.2f} s | "
            f"{r['naive_over_all_labels']:.2f}x ({r['naive_over_all_labels_arithmetic']:.2f}x) |"
        )


if __name__ == "__main__":
    main()
