"""Paths into the repository and its shipped configs, for tests that run them."""

from pathlib import Path

from fflab.config import Config, load_config

REPO = Path(__file__).resolve().parent.parent


def config_path(name: str) -> str:
    """The shipped config `configs/<name>.toml`, as the command line would name it."""
    return str(REPO / "configs" / f"{name}.toml")


def shipped_config(name: str, overrides=()) -> Config:
    """The shipped config `name` with `section.key=value` overrides applied."""
    return load_config(config_path(name), list(overrides))
