"""The Python examples in the docs run as pasted."""

import re

import pytest
from repo import REPO

PAGES = ["docs/how-it-works.md"]


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / page).read_text(), flags=re.S)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_every_python_example_runs(page, capsys):
    blocks = python_blocks(page)
    assert blocks, f"{page} has no Python example"
    for code in blocks:
        exec(compile(code, page, "exec"), {})  # noqa: S102 (the docs' own code)
    assert "accuracy" in capsys.readouterr().out
