"""Test-wide settings: derived-data caches go to a temporary folder, never the user's cache or shared data;
real data sets are found in one place.

Real data (MNIST, Fashion-MNIST, CIFAR-10 files) lives in the folder named by $FFLAB_DATA (CI points it at
../shared/datasets). A test that needs some of it either takes the `real_data` fixture and calls
`real_data("mnist")` for the folder, or, when it only needs the files to be there (a training run finds
them through $FFLAB_DATA itself), carries `@pytest.mark.real_data("mnist")`. Either way the test is skipped,
naming what is missing, when $FFLAB_DATA is unset or lacks a set, and `pytest -m real_data` selects them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

DATA_ENV = "FFLAB_DATA"
# The forms a set may take in the data folder besides a folder of its own name.
OTHER_FORMS = {"cifar10": ("cifar10-jpeg.tar",)}


def find_real_data(*names: str) -> Path:
    """The data folder $FFLAB_DATA (resolved) when it holds every set in `names`; else skip the test."""
    value = os.environ.get(DATA_ENV)
    wanted = ", ".join(f"{name}/" for name in names) or "the real data sets"
    if not value:
        pytest.skip(f"{DATA_ENV} is not set: point it at a folder holding {wanted} (CI: ../shared/datasets)")
    root = Path(value).expanduser().resolve()
    if not root.is_dir():
        pytest.skip(f"{DATA_ENV}={value} is not a folder")
    for name in names:
        forms = (name, *OTHER_FORMS.get(name, ()))
        if not any((root / form).exists() for form in forms):
            pytest.skip(f"{DATA_ENV}={value} holds no {' or '.join(forms)}")
    return root


@pytest.fixture(scope="session")
def real_data() -> Callable[..., Path]:
    """`real_data("mnist", ...)`: the real data folder holding those sets; skips the test when it has none."""
    return find_real_data


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that takes the fixture (directly or through another fixture) is a real-data test for `-m`.
    for item in items:
        if "real_data" in getattr(item, "fixturenames", ()) and item.get_closest_marker("real_data") is None:
            item.add_marker(pytest.mark.real_data)


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("real_data")
    if marker is not None and "real_data" not in getattr(item, "fixturenames", ()):  # the fixture names its sets
        find_real_data(*marker.args)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FFLAB_CACHE", str(tmp_path_factory.getbasetemp() / "fflab-cache"))
