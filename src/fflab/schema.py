"""Declaring settings fields: choices, bounds and a doc line, which the config checks and `fflab settings` shows.

Torch-free, so that the config schema and the model families (whose own settings tables use these helpers) can
be imported without loading torch.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from typing import Any


def choice(default: str, options: typing.Iterable[str] | typing.Callable[[], list[str]], doc: str = "") -> Any:
    """A string field restricted to `options` (or to what a callable returns when asked: a registry's names)."""
    return field(default=default, metadata={"choices": options if callable(options) else tuple(options), "doc": doc})


def choices_of(f: dataclasses.Field) -> tuple[str, ...] | None:
    """The values a choice field accepts now (None for other fields)."""
    options = f.metadata.get("choices")
    return tuple(options()) if callable(options) else options


def bounded(default: Any, low: float | None = None, high: float | None = None, doc: str = "") -> Any:
    """A numeric field restricted to [low, high] (each bound optional)."""
    return field(default=default, metadata={"low": low, "high": high, "doc": doc})


def described(default: Any, doc: str) -> Any:
    """A field with neither choices nor bounds, documented for `fflab settings`; a list default is copied."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})
