"""What a run read, recorded in its directory (inputs.json), so that `fflab resume`, `fflab eval` and `fflab
analyze` find the same data again without being told.

A run records two absolute paths. The first is its data directory: `--data-dir`, else $FFLAB_DATA, else the user
cache. The second is `data.path` of a user's own folder (`idx`, `image-folder`), which config.toml may give
relative to where the run was started. Later commands use them where they still exist, unless `--data-dir`
says otherwise. Where a recorded folder is gone (the data moved), they look where they would without a record.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from fflab.config import Config
from fflab.data import resolve_data_dir
from fflab.io import write_json_atomic

INPUTS = "inputs.json"


def inputs_of(cfg: Config, data_dir: str | None) -> dict:
    """The record of the data that `cfg` loads with `data_dir` (None: $FFLAB_DATA, else the user cache)."""
    path = cfg.data.path
    return {
        "data": cfg.data.name,
        "data_dir": str(resolve_data_dir(data_dir)),
        "data_path": str(Path(path).expanduser().absolute()) if path else None,
    }


def record_inputs(run_dir: Path, cfg: Config, data_dir: str | None) -> None:
    """Write (or update) the run's inputs.json; nothing is written when it already says the same."""
    record = inputs_of(cfg, data_dir)
    if recorded_inputs(run_dir) != record:
        write_json_atomic(Path(run_dir) / INPUTS, record)


def recorded_inputs(run_dir: Path) -> dict:
    """The run's inputs.json ({} for a run made before runs recorded their inputs, or a damaged record)."""
    try:
        record = json.loads((Path(run_dir) / INPUTS).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def reuse_inputs(run_dir: Path, cfg: Config, data_dir: str | None) -> tuple[Config, str | None]:
    """The config to load the data of the run in `run_dir` with (`cfg`, its config, with data.path made the
    absolute folder the run read) and the data directory: `data_dir` (`--data-dir`) if given, else the recorded
    one. A recorded folder that no longer exists is not used."""
    record = recorded_inputs(run_dir)
    if record.get("data") != cfg.data.name:
        return cfg, data_dir
    if data_dir is None and isinstance(record.get("data_dir"), str) and Path(record["data_dir"]).is_dir():
        data_dir = record["data_dir"]
    path = record.get("data_path")
    if cfg.data.path and not Path(cfg.data.path).expanduser().is_absolute() and isinstance(path, str):
        if Path(path).exists():
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=path))
    return cfg, data_dir
