"""The documentation site builds with `mkdocs build --strict` (skipped without the docs extra), and its hooks
point links that leave docs/ at the pages that show those files."""

import subprocess
import sys

import pytest
from repo import REPO


def hooks():
    pytest.importorskip("mkdocs")
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import mkdocs_hooks
    finally:
        sys.path.pop(0)
    return mkdocs_hooks


def test_links_out_of_docs_point_at_the_sites_pages():
    h = hooks()
    text = (
        "See [BENCHMARKS.md](../../BENCHMARKS.md#speed), [scaling](../scaling.md) and [a config](../../configs/x.toml)."
    )
    out = h.rewrite_links(text, REPO / "docs" / "notes", "notes/page.md")
    assert (
        out == "See [BENCHMARKS.md](../benchmarks.md#speed), [scaling](../scaling.md) and a config (`configs/x.toml`)."
    )
    fenced = "```text\n[not a link](../../BENCHMARKS.md)\n```\n"
    assert h.rewrite_links(fenced, REPO / "docs", "page.md") == fenced
    from_root = h.rewrite_links("[notes](docs/notes/) [cli](docs/cli.md)", REPO, "benchmarks.md")
    assert from_root == "[notes](notes/index.md) [cli](cli.md)"


def test_results_rows_come_from_benchmarks_md_and_a_missing_config_is_a_warning(caplog):
    h = hooks()
    block = h.results_block(["mnist-ff"], "families/ff.md")
    rows = [line for line in block.splitlines() if line.startswith("| `")]
    assert rows and all(row.startswith("| `mnist-ff`") for row in rows)
    assert "[BENCHMARKS.md](../benchmarks.md)" in block
    h.results_block(["no-such-config"], "families/ff.md")
    assert "no row for no-such-config" in caplog.text


def test_mkdocs_build_strict(tmp_path):
    for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(name)
    # not --quiet: it drops the warnings that --strict counts, and the build passes whatever they say
    mkdocs = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    done = subprocess.run(mkdocs, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "families" / "ff" / "index.html").is_file()
    assert "mnist-conv" in (tmp_path / "site" / "families" / "ff" / "index.html").read_text()
