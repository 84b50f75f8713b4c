"""Test-wide settings: derived-data caches go to a temporary folder, never the user's cache or shared data."""

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FFLAB_CACHE", str(tmp_path_factory.getbasetemp() / "fflab-cache"))
