"""Does a refactor change what fflab computes? Record, then compare, the results of fixed short runs.

    python benchmarks/behaviour_check.py record benchmarks/results/behaviour-reference.json
    python benchmarks/behaviour_check.py compare benchmarks/results/behaviour-reference.json

Each case trains one config (seed 0, one thread) and keeps its first-epoch metrics (per-layer loss and
goodness, monitor accuracies) and a SHA-256 of every saved weight. `compare` reruns the cases and prints,
per case, whether the metrics and the weights are bit-identical to the record; it exits 1 otherwise.
The mnist-ff case runs the whole config (18 epochs), so its weights are the issue's "bit-identical"
check; the others are short subset runs of one recurrent, one conv, one spiking and one Hebbian config.
Needs the MNIST files (`--data-dir` or $FFLAB_DATA).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from fflab.config import load_config
from fflab.io import write_json_atomic
from fflab.training.run import train_run

CONFIGS = Path(__file__).parent.parent / "configs"
SHORT = ["train.epochs=1", "data.train_subset=2000", "data.test_subset=500", "train.monitor_size=500"]
CASES = {
    "mnist-ff": ("mnist-ff", []),
    "mnist-recurrent": ("mnist-recurrent", [*SHORT, "model.hidden=[200,200,200]", "train.precision=float32"]),
    "mnist-conv": ("mnist-conv", [*SHORT, "train.precision=float32"]),
    "mnist-spiking-ff": ("mnist-spiking-ff", [*SHORT, "model.hidden=[200,200]"]),
    "mnist-hebbian": ("mnist-hebbian", [*SHORT, "data.train_subset=500"]),
}
COMMON = ["train.seed=0", "train.threads=1", "eval.train_accuracy=false"]


def weights_digest(run_dir: Path) -> str:
    tensors = load_file(str(run_dir / "model.safetensors"))
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def run_case(name: str, data_dir: str | None) -> dict:
    config, overrides = CASES[name]
    cfg = load_config(CONFIGS / f"{config}.toml", [*overrides, *COMMON])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        summary = train_run(cfg, run_dir, data_dir=data_dir, progress=False, log=lambda _: None)
        first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
        digest = weights_digest(run_dir)
    kept = {k: v for k, v in first.items() if k not in ("train_seconds", "samples_per_second", "worker_busy")}
    return {
        "overrides": [*overrides, *COMMON],
        "first_epoch": kept,
        "held_out_accuracy": summary.get("test_accuracy"),
        "weights_sha256": digest,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["record", "compare"])
    parser.add_argument("reference", type=Path)
    parser.add_argument("--data-dir")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    results = {}
    for name in args.cases:
        results[name] = run_case(name, args.data_dir)
        print(f"{name}: {results[name]['seconds']} s", flush=True)
    if args.action == "record":
        write_json_atomic(args.reference, {"torch": torch.__version__, "cases": results})
        return
    reference = json.loads(args.reference.read_text())["cases"]
    same = True
    for name, got in results.items():
        want = reference[name]
        metrics = got["first_epoch"] == want["first_epoch"] and got["held_out_accuracy"] == want["held_out_accuracy"]
        weights = got["weights_sha256"] == want["weights_sha256"]
        same &= metrics and weights
        print(
            f"{name}: first-epoch metrics {'identical' if metrics else 'DIFFER'}, "
            f"weights {'identical' if weights else 'DIFFER'}"
        )
        if not metrics:
            print(f"  recorded {want['first_epoch']}\n  now      {got['first_epoch']}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
