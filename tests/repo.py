"""Paths into the repository and its shipped configs, for tests that run them."""

import json
import os
import re
from pathlib import Path

from fflab.config import Config, load_config

REPO = Path(__file__).resolve().parent.parent


def config_path(name: str) -> str:
    """The shipped config `configs/<name>.toml`, as the command line would name it."""
    return str(REPO / "configs" / f"{name}.toml")


def shipped_config(name: str, overrides=()) -> Config:
    """The shipped config `name` with `section.key=value` overrides applied."""
    return load_config(config_path(name), list(overrides))


def dated_record(folder: Path, stem: str) -> dict:
    """The one record `<stem>-<date>-<time>.json` a benchmark script wrote in `folder` (benchmarks/records.py's
    `dated_name`)."""
    name = re.compile(re.escape(stem) + r"-\d{8}-\d{6}\.json")  # not glob: "[64]" in a stem is no pattern
    found = [p for p in Path(folder).iterdir() if name.fullmatch(p.name)]
    assert len(found) == 1, f"one {stem}-<date>-<time>.json expected in {folder}, found {sorted(os.listdir(folder))}"
    (path,) = found
    return json.loads(path.read_text())
