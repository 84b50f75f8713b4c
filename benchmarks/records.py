"""Benchmark records: one JSON file per run under benchmarks/results/, in one format.

A record says what ran (config, overrides, seed), what it scored (`metrics`, fractions), how it ran (`run`:
epochs, times, throughput), and on what: fflab version and git commit, torch, device and CPU model, precision,
threads, date. Figures that were measured before records existed and copied from the text of BENCHMARKS.md
say so: `"imported": true` and `"source": "BENCHMARKS.md at commit ..."`.

    {
      "format": "fflab-benchmark-record/1",
      "config": "mnist-ff", "config_file": "configs/mnist-ff.toml", "overrides": ["train.threads=1"], "seed": 0,
      "metrics": {"test_accuracy": 0.9842, "test_accuracy_by_method": {"goodness": 0.9842}, ...},
      "run": {"epochs": 18, "train_seconds": 157.1, "samples_per_second": 6873.3, ...},
      "fflab_version": "0.1.0", "commit": "c5abee3...", "dirty": false, "torch": "2.13.0+cpu",
      "device": "cpu", "cpu": "Intel(R) Xeon(R) Processor", "precision": "float32", "threads": 2,
      "date": "2026-12-06T08:32:00Z", "imported": false, "source": null
    }

benchmarks/results.py aggregates the records into benchmarks/results.csv and the results tables.
"""

from __future__ import annotations

import datetime
import json
import platform
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
FORMAT = "fflab-benchmark-record/1"
REQUIRED = (
    "format",
    "config",
    "overrides",
    "seed",
    "metrics",
    "run",
    "fflab_version",
    "commit",
    "torch",
    "device",
    "cpu",
    "precision",
    "threads",
    "date",
    "imported",
    "source",
)
# summary.json keys that are scores; the rest of a summary describes the run
METRIC = re.compile(r"^(test|validation|train)_accuracy(_by_method|_per_layer)?$")


def git_commit(repo: Path = REPO) -> tuple[str | None, bool | None]:
    """The checked-out commit of `repo` and whether tracked files differ from it; (None, None) outside git."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        )
    except OSError:  # no git on this machine
        return None, None
    if head.returncode or status.returncode:
        return None, None
    return head.stdout.strip(), bool(status.stdout.strip())


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name as the kernel reports it (Linux), else what `platform` knows."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_name(device: str) -> str:
    """`device` as a record names it: "cpu", or "cuda:0 (NVIDIA H100 ...)" for a GPU."""
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def fflab_version() -> str:
    import fflab

    return fflab.__version__


def split_summary(summary: dict) -> tuple[dict, dict]:
    """A run's summary.json as (metrics, the rest); the record keeps its own copies of device, precision,
    threads and torch, so those leave the rest."""
    metrics = {k: v for k, v in summary.items() if METRIC.match(k) and v is not None}
    own = {"device", "precision", "threads", "torch", "config"}
    run = {k: v for k, v in summary.items() if not METRIC.match(k) and k not in own}
    return metrics, run


def make_record(
    config_file: str | Path,
    overrides: list[str],
    seed: int,
    summary: dict,
    extra_run: dict | None = None,
    started: datetime.datetime | None = None,
) -> dict:
    """The record of a run of `config_file` with `overrides` that wrote `summary` (its summary.json)."""
    metrics, run = split_summary(summary)
    commit, dirty = git_commit()
    path = Path(config_file).resolve()
    started = started or datetime.datetime.now(datetime.UTC)
    return {
        "format": FORMAT,
        "config": path.stem,
        "config_file": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(config_file),
        "overrides": list(overrides),
        "seed": seed,
        "metrics": metrics,
        "run": {**run, **(extra_run or {})},
        "fflab_version": fflab_version(),
        "commit": commit,
        "dirty": dirty,
        "torch": summary["torch"],
        "device": device_name(str(summary["device"])),
        "cpu": cpu_model(),
        "precision": summary["precision"],
        "threads": summary["threads"],
        "date": started.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "imported": False,
        "source": None,
    }


def _record_stem(record: dict) -> tuple[str, datetime.datetime]:
    """The config and overrides of `record` as a file-name stem, and the time it started."""
    tag = "".join("-" + item.replace("=", "_").replace(" ", "") for item in record["overrides"])
    return f"{record['config']}{tag}", datetime.datetime.fromisoformat(record["date"])


def record_name(record: dict) -> str:
    """A file name for `record`: config, overrides and the time it started."""
    return dated_name(*_record_stem(record))


def record_path(folder: Path, record: dict) -> Path:
    """Where `record` goes in `folder`: its `record_name`, made free as `dated_path` does."""
    return dated_path(folder, *_record_stem(record))


def dated_name(stem: str, when: datetime.datetime | None = None) -> str:
    """`<stem>-<date>-<time>.json` (UTC; `when`, default now): a benchmark's output file name."""
    when = (when or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC)
    return f"{stem}-{when.strftime('%Y%m%d-%H%M%S')}.json"


def dated_path(folder: Path, stem: str, when: datetime.datetime | None = None) -> Path:
    """Where a benchmark writes its output in `folder`: `dated_name`, or with -2, -3, ... before .json where a file of
    that name is there already (a second run in the same second), so that no run overwrites another's figures."""
    name = dated_name(stem, when)
    path, k = folder / name, 1
    while path.exists():
        k += 1
        path = folder / f"{name.removesuffix('.json')}-{k}.json"
    return path


def check_record(record: dict, where: str = "record") -> None:
    """Raise ValueError naming what a record lacks or gets wrong."""
    if record.get("format") != FORMAT:
        raise ValueError(f"{where}: format is {record.get('format')!r}, expected {FORMAT!r}")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    if record["imported"] and not record["source"]:
        raise ValueError(f"{where}: an imported record must name its source")
    if not any(k.endswith("_accuracy") for k in record["metrics"]):
        raise ValueError(f"{where}: metrics hold no accuracy")


def load_records(folder: Path = RESULTS) -> list[tuple[Path, dict]]:
    """Every record under `folder` (recursively), checked, in file-name order.

    Other benchmark outputs there (benchmarks/speed.py, train_step.py, parallel.py, untrained_control.py) are
    skipped; a file that looks like a benchmarks/train.py result from before records (top-level overrides, epochs
    and an accuracy) is an error, so that no run drops out of the tables unseen.
    """
    found = []
    for path in sorted(folder.rglob("*.json")):
        data = json.loads(path.read_text())
        name = str(path.relative_to(folder))
        if "format" in data:
            check_record(data, name)
            found.append((path, data))
        elif {"overrides", "epochs"} <= data.keys() and ("test_accuracy" in data or "validation_accuracy" in data):
            raise ValueError(f"{name}: a training result that is not a record (format {FORMAT!r})")
    return found
