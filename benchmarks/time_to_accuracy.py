"""Time to accuracy: training seconds until the full held-out set first scores the target, with the machine's peaks.

    FFLAB_DATA=../shared/datasets python benchmarks/time_to_accuracy.py configs/mnist-ff.toml --target 0.98
        [--set KEY=VALUE ...] [--baseline CONFIG2 [--baseline-set KEY=VALUE ...]] [--every N] [--keep DIR]

Each config is trained by `fflab.training.run.train_run`, exactly as `fflab train` does, except that its per-epoch
monitor scores the *whole* held-out set (`train.monitor_size` = the test set's size, or data.validation's) every
`--every` epochs. train_run keeps the monitor's time out of each epoch's `train_seconds` in metrics.jsonl, so the
training clock is the same as without scoring. The time to the target is the sum of `train_seconds` over the epochs
up to and including the first scored epoch whose held-out accuracy is >= the target (null if no epoch got there).
Only epoch ends are scored, so it is an upper bound by at most one epoch's (or --every epochs') training.
The epoch clock starts after the trainer's start_epoch hook: with train.hard_scores = "refreshed" the refresh of the
score bank runs there, uncounted, and the record says so (its "notes").

In the same process, before and after the runs, the float32 and bfloat16 matmul peaks of the run's device are
measured (`fflab.perf.matmul_peak_gflops`), and an optional baseline config is trained the same way, so that the
ratios (baseline / config, and seconds against the peaks) hold on any machine. Two settings that do not touch
training are changed by default, to save wall time: train.checkpoint_every=0 (no resume state written per epoch)
and eval.train_accuracy=false (no final pass over the training set); --set can set them back.

The record goes to benchmarks/results/tta-<config>[-overrides]-<date>-<time>.json (or under --results): config,
overrides, seed, per-epoch seconds and accuracy, time to target, peaks, torch version, CPU model, threads, git commit
and date. A Markdown row per config is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from records import cpu_model, dated_path, git_commit

from fflab.config import load_config
from fflab.devices import resolve_device
from fflab.io import write_json_atomic
from fflab.perf import matmul_peak_gflops, set_threads, settle_precision
from fflab.training.run import train_run

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parent.parent
SEQUENCE_SETS = ("seq-mnist", "moving-mnist")
# Settings that leave training and its clock alone; they only save wall time. The user's --set comes after them.
HEADER = (
    "| config | --set | precision | target | training time to target | final | samples/s | at bf16 peak | vs baseline |"
)
QUIET = ["train.checkpoint_every=0", "eval.train_accuracy=false"]


def tag(overrides: list[str]) -> str:
    """A file-name suffix naming the overrides ("-train.lr_0.01-..."; "" for none)."""
    return "".join("-" + item.replace("=", "_").replace("/", "_") for item in overrides)


def held_out_size(cfg, data_dir: str | None) -> int:
    """How many images the run holds out (scores at the end): data.validation, else the test set after test_subset."""
    if cfg.data.validation:
        return cfg.data.validation
    if cfg.data.name in SEQUENCE_SETS:
        raise SystemExit(f"{cfg.data.name}: time to accuracy takes image data sets (sequence sets: not yet)")
    from fflab.data import load_dataset

    ds = load_dataset(cfg.data.name, data_dir=data_dir, path=cfg.data.path or None, progress=False)
    n = len(ds.test_x)
    return min(cfg.data.test_subset or n, n)


def measure_peaks(device: torch.device, **options) -> dict:
    """float32 and bfloat16 matmul peaks (GFLOP/s) on `device` with the current thread setting."""
    return {p: round(matmul_peak_gflops(device=device, precision=p, **options), 1) for p in ("float32", "bfloat16")}


def run_to_target(
    config: str, overrides: list[str], target: float, every: int, data_dir: str | None, keep: str | None, log
) -> dict:
    """Train `config` scoring the whole held-out set every `every` epochs; the per-epoch record and time to target."""
    cfg = load_config(config, [*QUIET, *overrides])
    n_held = held_out_size(cfg, data_dir)
    cfg = load_config(config, [*QUIET, *overrides, f"train.monitor_size={n_held}", f"train.monitor_every={every}"])
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(keep) / f"{Path(config).stem}-{time.strftime('%Y%m%d-%H%M%S')}" if keep else Path(tmp) / "run"
        start = time.perf_counter()
        summary = train_run(cfg, run_dir, data_dir=data_dir, progress=False, log=log)
        wall = time.perf_counter() - start
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    split = "validation" if cfg.data.validation else "test"
    if summary[f"{split}_samples"] > n_held:
        raise SystemExit(f"{config}: the monitor scored {n_held} of {summary[f'{split}_samples']} {split} images")
    key = f"{split}_accuracy"
    if not any(key in row for row in rows):
        raise SystemExit(
            f"{config}: the per-epoch monitor gave no {split} accuracy (a network that predicts only by a readout "
            "trained after the run cannot be scored during it)"
        )
    epochs, clock, reached = [], 0.0, None
    for row in rows:
        clock += row["train_seconds"]
        accuracy = row.get(key)
        epochs.append(
            {
                "epoch": row["epoch"],
                "train_seconds": round(row["train_seconds"], 3),
                "cumulative_train_seconds": round(clock, 3),
                "samples_per_second": round(row["samples_per_second"], 1),
                key: accuracy,
            }
        )
        if reached is None and accuracy is not None and accuracy >= target:
            reached = epochs[-1]
    flop_per_sample = summary["train_gflop_per_second"] * 1e9 / summary["samples_per_second"]
    monitored = "backprop" if cfg.model.kind == "backprop" else "goodness"
    result = {
        "config": config,
        "overrides": overrides,
        "seed": cfg.train.seed,
        "target": target,
        "split": split,
        "held_out_samples": n_held,
        "scored_every_epochs": every,
        "monitored_by": monitored,
        "final_predict": summary["predict"],
        "epochs": epochs,
        "epochs_run": summary["epochs"],
        "train_samples": summary["train_samples"],
        "epoch_to_target": reached["epoch"] if reached else None,
        "seconds_to_target": reached["cumulative_train_seconds"] if reached else None,
        "accuracy_at_target": reached[key] if reached else None,
        "best_scored_accuracy": max((e[key] for e in epochs if e[key] is not None), default=None),
        "final_accuracy": summary[key],
        "train_seconds": summary["train_seconds"],
        "monitor_seconds": summary["monitor_seconds"],
        "wall_seconds": round(wall, 1),
        "samples_per_second": summary["samples_per_second"],
        "train_gflop_per_second": summary["train_gflop_per_second"],
        "gflop_per_sample": float(f"{flop_per_sample / 1e9:.4g}"),
        "arithmetic_tflop_to_target": (
            float(f"{flop_per_sample * summary['train_samples'] * reached['epoch'] / 1e12:.4g}") if reached else None
        ),
        "precision": summary["precision"],
        "device": summary["device"],
        "threads": summary["threads"],
    }
    notes = []
    if monitored != summary["predict"]:
        notes.append(
            f"per-epoch accuracy is by {monitored}, the run's final figure by {summary['predict']}: the time to target "
            f"counts the {monitored} prediction"
        )
    if cfg.train.negatives in ("hard", "hardest") and cfg.train.hard_scores == "refreshed":
        notes.append(
            "hard_scores = 'refreshed': the score bank is refreshed in the trainer's start_epoch, before each epoch's "
            "clock starts, so train_seconds (and the time to target) leave that work out"
        )
    if notes:
        result["notes"] = notes
    return result


def against_peaks(result: dict, peaks: dict) -> None:
    """Seconds the arithmetic to target would take at each peak, and the run's share of its own precision's peak."""
    arithmetic = result["arithmetic_tflop_to_target"]
    for p, gflops in peaks.items():
        result[f"seconds_to_target_at_{p}_peak"] = float(f"{arithmetic * 1e3 / gflops:.4g}") if arithmetic else None
    own = peaks.get(result["precision"])
    result["share_of_own_peak"] = round(result["train_gflop_per_second"] / own, 3) if own else None


def markdown_row(r: dict) -> str:
    split = r["split"]
    when = (
        f"**{r['seconds_to_target']:.1f} s** (epoch {r['epoch_to_target']}, {r['accuracy_at_target']:.2%})"
        if r["seconds_to_target"] is not None
        else f"not reached in {r['epochs_run']} epochs (best {r['best_scored_accuracy']:.2%})"
    )
    at_peak = r.get("seconds_to_target_at_bfloat16_peak")
    ratio = r.get("speedup_vs_baseline")
    sets = " ".join(f"`{o}`" for o in r["overrides"]) or "-"
    return (
        f"| {Path(r['config']).stem} | {sets} | {r['precision']}, {r['threads']} threads | {r['target']:.2%} {split} | "
        f"{when} | {r['final_accuracy']:.2%} | {r['samples_per_second']:,.0f} | "
        f"{'-' if at_peak is None else f'{at_peak:.1f} s'} | {'-' if ratio is None else f'{ratio:.2f}x'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--target", type=float, default=0.98, help="held-out accuracy to reach (default 0.98)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides for CONFIG")
    parser.add_argument("--baseline", metavar="CONFIG2", help="a config trained the same way in this run, for ratios")
    parser.add_argument("--baseline-set", action="append", default=[], metavar="KEY=VALUE", help="its overrides")
    parser.add_argument("--every", type=int, default=1, help="score the held-out set every N epochs (default 1)")
    parser.add_argument("--data-dir")
    parser.add_argument("--keep", metavar="DIR", help="keep each run directory under DIR (default: discard)")
    parser.add_argument("--quick-peaks", action="store_true", help="peaks from 512x512 products only (tests)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch log lines on stderr")
    parser.add_argument("--results", metavar="DIR", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    args = parser.parse_args()
    if not 0 < args.target <= 1 or args.every < 1:
        parser.error("--target is a fraction in (0, 1] and --every at least 1")
    for item in [*args.set, *args.baseline_set]:
        if item.split("=", 1)[0].strip() in ("train.monitor_size", "train.monitor_every"):
            parser.error(f"{item}: the monitor is set by this script (the whole held-out set, every --every epochs)")

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    cfg = load_config(args.config, args.set)
    # set_threads first: it flushes denormals, which reaches torch's worker threads only before they start
    threads = set_threads(cfg.train.threads)
    device = resolve_device(cfg)
    precision = settle_precision(cfg.train.precision, device)[0]
    peak_options = {"sizes": (512,), "repeats": 4, "rounds": 2} if args.quick_peaks else {}
    before = measure_peaks(device, **peak_options)
    log(f"matmul peaks on {device}, {threads} threads: {before} GFLOP/s")
    runs = [("config", args.config, args.set)]
    if args.baseline:
        runs.append(("baseline", args.baseline, args.baseline_set))
    results = {}
    for role, config, overrides in runs:
        results[role] = run_to_target(config, overrides, args.target, args.every, args.data_dir, args.keep, log)
    after = measure_peaks(device, **peak_options)
    best = {p: max(before[p], after[p]) for p in before}
    for r in results.values():
        against_peaks(r, best)
    main_run, base = results["config"], results.get("baseline")
    if base is not None and main_run["seconds_to_target"] and base["seconds_to_target"]:
        main_run["speedup_vs_baseline"] = round(base["seconds_to_target"] / main_run["seconds_to_target"], 3)
    commit, dirty = git_commit()
    record = {
        **main_run,
        "baseline": base,
        "matmul_peak_gflop_per_second": best,
        "peaks_before_and_after": {"before": before, "after": after},
        "settled_precision": precision,
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "git_commit": commit,
        "dirty": dirty,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    out = dated_path(args.results, f"tta-{Path(args.config).stem}{tag(args.set)}")
    write_json_atomic(out, record)
    print(
        f"peaks on {device} ({record.get('gpu', record['cpu'])}, {threads} threads): "
        f"float32 {best['float32']:,.0f}, bfloat16 {best['bfloat16']:,.0f} GFLOP/s; record: {out}"
    )
    print(HEADER)
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results.values():
        print(markdown_row(r))


if __name__ == "__main__":
    main()
