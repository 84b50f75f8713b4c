"""The registry of model families (`model.kind`), in the spirit of timm's `register_model`.

fflab's own families register when this package is imported; another package registers its own with
`register_family` (at import), or through the `fflab.families` entry point group, whose entries name a
Family subclass (``myfamily = "mypkg.family:MyFamily"``) and are loaded on the first lookup. Importing the
registry loads no torch.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

from fflab.errors import ConfigError
from fflab.families.base import Family

_FAMILIES: dict[str, Family] = {}
_entry_points_loaded = False


def register_family(family: type[Family] | Family) -> type[Family] | Family:
    """Add a family (a Family subclass or instance) under its `name`; usable as a class decorator."""
    instance = family() if isinstance(family, type) else family
    if not instance.name:
        raise ValueError(f"{family!r} has no name")
    known = _FAMILIES.get(instance.name)
    if known is not None and type(known) is not type(instance):
        raise ValueError(f"a model family named {instance.name!r} is already registered ({type(known).__name__})")
    _FAMILIES[instance.name] = instance
    return family


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group="fflab.families"):
        register_family(ep.load())


def family_names() -> list[str]:
    """Every registered family's name, fflab's own first."""
    _load_entry_points()
    return list(_FAMILIES)


def get_family(name: str) -> Family:
    """The family registered as `name`; ConfigError naming the known ones otherwise."""
    if name not in _FAMILIES:
        _load_entry_points()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ConfigError(f"model.kind: expected one of {family_names()}, got {name!r}") from None


def family_of(model) -> Family:
    """The family a built network belongs to (every fflab network records its family's name in `kind`)."""
    return get_family(model.kind)


# fflab's own families, registered in the order `fflab settings` lists them.
for _module in ("feedforward", "recurrent", "backprop", "hebbian", "residual", "spatial_goodness"):
    import_module(f"fflab.families.{_module}")

__all__ = ["Family", "family_names", "family_of", "get_family", "register_family"]
