"""Benchmark training runs: accuracy, wall time, samples/s and share of the machine's matmul peak.

    python benchmarks/train.py configs/mnist-ff.toml configs/fashion-ff.toml [--set key=value ...]

Each config is trained and evaluated exactly as `fflab train` does (wall time includes loading
data, training, per-epoch monitoring, final evaluation and writing the run directory). The matmul
peak at the run's `train.precision` is measured in the same process before each run. Each run writes one
record (benchmarks/records.py: config, overrides, seed, metrics, versions, commit, machine, date) to
benchmarks/results/<config>-<overrides>-<time>.json (or under --results), and a Markdown row is printed.
`python benchmarks/results.py` then rebuilds benchmarks/results.csv and the results tables from the records.

A long run goes through `fflab train --out DIR` and `fflab resume DIR` instead, across as many sessions as it needs;
once it is done, `--from-run DIR` writes its record (one config, the same --set as it was trained with):

    python benchmarks/train.py configs/reference/hebbian-ffa-online.toml --set train.threads=1 --from-run DIR

The run's config.toml must be what CONFIG with those overrides resolves to, or nothing is written. Such a record
takes its figures from the run's summary.json and its date from the run's start; it has no matmul peak (one measured
later would not describe the machine as the run found it), and its commit is the one it was recorded at (the run
directory does not name the one it trained at), which its "run" says.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

from records import RESULTS, make_record, record_path

from fflab.config import load_config
from fflab.devices import resolve_device
from fflab.io import write_json_atomic
from fflab.perf import matmul_peak_gflops, set_threads, settle_precision
from fflab.training.run import train_run


def bench(config: str, overrides: list[str], data_dir: str | None, keep: str | None) -> dict:
    cfg = load_config(config, overrides)
    set_threads(cfg.train.threads)
    device = resolve_device(cfg)
    # settled once here, so that the run computes in the precision its peak is measured at
    precision = settle_precision(cfg.train.precision, device)[0]
    cfg = cfg.with_train(precision=precision)
    peak = matmul_peak_gflops(device=device, precision=precision)
    started = datetime.datetime.now(datetime.UTC)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(keep) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}" if keep else Path(tmp) / "run"
        summary = train_run(cfg, run_dir, data_dir=data_dir, progress=False)
    wall = time.perf_counter() - start
    bench = {
        "bench_wall_seconds": round(wall, 1),
        "matmul_peak_gflop_per_second": round(peak, 1),
        "share_of_peak": round(summary["train_gflop_per_second"] / peak, 3),
    }
    return make_record(config, overrides, cfg.train.seed, summary, bench, started)


def config_differences(wanted, stored) -> list[str]:
    """The settings in which a run's stored config differs from `wanted` ("key: here, there" lines). The stored
    config records the precision an "auto" setting settled on, so that one is compared as settled."""
    if wanted.train.precision == "auto":
        wanted = wanted.with_train(precision=stored.train.precision)

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(wanted.to_dict()), flat(stored.to_dict())
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return [f"{k}: {a.get(k)!r} here, {b.get(k)!r} in the run" for k in keys]


def record_from_run(config: str, overrides: list[str], run_dir: Path) -> dict:
    """The record of a finished run directory trained by `fflab train` (and `fflab resume`) from `config` with
    `overrides` (see the module doc)."""
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        sys.exit(f"{run_dir} holds no summary.json: the run has not finished (fflab resume {run_dir})")
    differs = config_differences(load_config(config, overrides), load_config(run_dir / "config.toml", stored=True))
    if differs:
        sys.exit(f"{run_dir} was not trained from {config} with these overrides:\n  " + "\n  ".join(differs))
    summary = json.loads(summary_path.read_text())
    started = datetime.datetime.fromtimestamp((run_dir / "config.toml").stat().st_mtime, datetime.UTC)
    bench = {  # no peak: one measured now would not be the machine's state while the run trained
        "bench_wall_seconds": round(summary["wall_seconds"], 1),
        "matmul_peak_gflop_per_second": None,
        "share_of_peak": None,
        "recorded_from": "a run directory trained by fflab train / resume: the commit is the one it was recorded at",
    }
    return make_record(config, overrides, load_config(config, overrides).train.seed, summary, bench, started)


def markdown_row(record: dict) -> str:
    m, r = record["metrics"], record["run"]
    peak = r["matmul_peak_gflop_per_second"]
    peak = "–" if peak is None else f"{peak:.0f} ({r['share_of_peak']:.0%})"
    held_out = "test" if "test_accuracy" in m else "validation"  # data.validation runs never read the test set
    accuracy = f"{m[f'{held_out}_accuracy']:.2%}" + (" (validation)" if held_out == "validation" else "")
    return (
        f"| {record['config']} | {r['dataset']} | {accuracy} | {r['epochs']} | "
        f"{r['bench_wall_seconds']:.0f} s ({r['train_seconds']:.0f} s train) | {r['samples_per_second']:,.0f} | "
        f"{r['train_gflop_per_second']:.0f} / {peak} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data-dir")
    parser.add_argument("--keep", metavar="DIR", help="keep each run directory under DIR (default: discard)")
    parser.add_argument("--results", metavar="DIR", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    parser.add_argument("--from-run", metavar="DIR", type=Path, help="record this finished run instead of training")
    args = parser.parse_args()
    if args.from_run and len(args.configs) != 1:
        parser.error("--from-run records one run: give the one config it was trained from")
    rows = []
    for config in args.configs:
        if args.from_run:
            record = record_from_run(config, args.set, args.from_run)
        else:
            record = bench(config, args.set, args.data_dir, args.keep)
        path = record_path(args.results, record)
        write_json_atomic(path, record)
        print(f"record: {path}")
        rows.append(markdown_row(record))
    print("| config | data | test acc | epochs | wall (train) | samples/s | GFLOP/s / peak |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
