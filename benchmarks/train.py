"""Benchmark training runs: accuracy, wall time, samples/s and share of the machine's matmul peak.

    python benchmarks/train.py configs/mnist-ff.toml configs/fashion-ff.toml [--set key=value ...]

Each config is trained and evaluated exactly as `fflab train` does (wall time includes loading
data, training, per-epoch monitoring, final evaluation and writing the run directory). The matmul
peak at the run's `train.precision` is measured in the same process before each run. Each run writes one
record (benchmarks/records.py: config, overrides, seed, metrics, versions, commit, machine, date) to
benchmarks/results/<config>-<overrides>-<time>.json (or under --results), and a Markdown row is printed.
`python benchmarks/results.py` then rebuilds benchmarks/results.csv and the results tables from the records.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

from records import RESULTS, make_record, record_name

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


def markdown_row(record: dict) -> str:
    m, r = record["metrics"], record["run"]
    held_out = "test" if "test_accuracy" in m else "validation"  # data.validation runs never read the test set
    accuracy = f"{m[f'{held_out}_accuracy']:.2%}" + (" (validation)" if held_out == "validation" else "")
    return (
        f"| {record['config']} | {r['dataset']} | {accuracy} | {r['epochs']} | "
        f"{r['bench_wall_seconds']:.0f} s ({r['train_seconds']:.0f} s train) | {r['samples_per_second']:,.0f} | "
        f"{r['train_gflop_per_second']:.0f} / {r['matmul_peak_gflop_per_second']:.0f} ({r['share_of_peak']:.0%}) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data-dir")
    parser.add_argument("--keep", metavar="DIR", help="keep each run directory under DIR (default: discard)")
    parser.add_argument("--results", metavar="DIR", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    args = parser.parse_args()
    rows = []
    for config in args.configs:
        record = bench(config, args.set, args.data_dir, args.keep)
        path = args.results / record_name(record)
        write_json_atomic(path, record)
        print(f"record: {path}")
        rows.append(markdown_row(record))
    print("| config | data | test acc | epochs | wall (train) | samples/s | GFLOP/s / peak |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
