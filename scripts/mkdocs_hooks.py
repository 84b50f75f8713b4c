"""mkdocs hooks (mkdocs.yml `hooks:`): what the docs site takes from outside docs/.

- BENCHMARKS.md becomes the page `benchmarks.md`, its links rewritten to the site's pages.
- `notes/index.md` is generated (unless docs/notes/index.md exists): every dated note, newest first.
- A family page's `<!-- results: CONFIG ... -->` line becomes the rows of BENCHMARKS.md's generated results tables
  for those configs (and their notes): the figures come from the benchmark records, never typed twice. A config
  with no row is a warning, so `mkdocs build --strict` fails when the tables and the docs drift apart.
- A link from any page to a file outside docs/ (e.g. `../BENCHMARKS.md`) points at the page that shows it, or,
  for a file the site does not publish (a config, a script), becomes its plain text with the path in code.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path, PurePosixPath

from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
BENCHMARKS = REPO / "BENCHMARKS.md"
log = logging.getLogger("mkdocs.hooks.fflab")

LINK = re.compile(r"(?<!!)\[([^\]\n]*)\]\(([^)\s]+)\)")
MARKER = re.compile(r"^<!-- results: ([^>]*?) -->$", re.MULTILINE)
FENCE = re.compile(r"(^```.*?^```)", re.MULTILINE | re.DOTALL)


def _outside_code(text: str, fn) -> str:
    """`fn` applied to the parts of markdown `text` outside fenced code blocks."""
    parts = FENCE.split(text)
    return "".join(part if i % 2 else fn(part) for i, part in enumerate(parts))


def rewrite_links(text: str, source_dir: Path, page_uri: str) -> str:
    """Links of markdown `text` (a file in `source_dir`, published as the page `page_uri`) that leave docs/."""
    page_dir = PurePosixPath(page_uri).parent

    def relative(target: Path) -> str:
        return os.path.relpath(target.relative_to(DOCS).as_posix(), page_dir.as_posix() or ".")

    def fix(match: re.Match) -> str:
        label, target = match.groups()
        if "://" in target or target.startswith(("#", "mailto:")):
            return match.group(0)
        path, _, anchor = target.partition("#")
        anchor = f"#{anchor}" if anchor else ""
        resolved = (source_dir / path).resolve()
        if resolved == BENCHMARKS:
            return f"[{label}]({relative(DOCS / 'benchmarks.md')}{anchor})"
        if resolved.is_relative_to(DOCS):
            if resolved.is_dir():
                resolved = resolved / "index.md"
            return f"[{label}]({relative(resolved)}{anchor})"
        shown = resolved.relative_to(REPO).as_posix() if resolved.is_relative_to(REPO) else path
        return label if label.strip("`") == shown else f"{label} (`{shown}`)"

    return _outside_code(text, lambda part: LINK.sub(fix, part))


def results_block(names: list[str], page: str) -> str:
    """BENCHMARKS.md's generated rows (and notes) of the configs `names`, as one table."""
    text = BENCHMARKS.read_text()
    begin, end = text.find("<!-- results:begin -->"), text.find("<!-- results:end -->")
    if begin < 0 or end < 0:
        log.warning(f"{page}: BENCHMARKS.md has no generated results block (<!-- results:begin --> ... end)")
        return ""
    lines = text[begin:end].splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("| config |")), None)
    if header is None:
        log.warning(f"{page}: BENCHMARKS.md's results block has no table")
        return ""

    def config_of(line: str, start: str) -> str | None:
        found = re.match(re.escape(start) + r"`([^`]+)`", line)
        return found.group(1) if found else None

    rows = [line for line in lines if config_of(line, "| ") in names]
    notes = [line for line in lines if config_of(line, "- ") in names]
    missing = [name for name in names if not any(config_of(row, "| ") == name for row in rows)]
    if missing:
        log.warning(f"{page}: BENCHMARKS.md's results tables have no row for {', '.join(missing)}")
    block = "\n".join([lines[header], lines[header + 1], *rows])
    if notes:
        block += "\n\n" + "\n".join(notes)
    references = [line for line in text.splitlines() if re.match(r"^\[[\w-]+\]: \S", line)]  # e.g. [hinton2022]: url
    if references:
        block += "\n\n" + "\n".join(references)
    block += (
        "\n\nGenerated from the benchmark records (`benchmarks/results/`) by `benchmarks/results.py`; "
        "sources, commands and every other config are in [BENCHMARKS.md](BENCHMARKS.md)."
    )
    return rewrite_links(block, REPO, page)


def _notes_index() -> str:
    notes = sorted((p for p in (DOCS / "notes").glob("*.md") if p.name != "index.md"), reverse=True)
    lines = ["# Dated notes", "", "How the benchmark figures were reached, one note per line of work, newest first."]
    lines.append("")
    for note in notes:
        text = note.read_text()
        title = text.splitlines()[0].lstrip("# ").strip() if text.strip() else note.stem
        lines.append(f"- [{title}]({note.name})")
    return "\n".join(lines) + "\n"


def on_files(files, config):
    benchmarks = rewrite_links(BENCHMARKS.read_text(), REPO, "benchmarks.md")
    files.append(File.generated(config, "benchmarks.md", content=benchmarks))
    if not (DOCS / "notes" / "index.md").exists():
        files.append(File.generated(config, "notes/index.md", content=_notes_index()))
    return files


def on_page_markdown(markdown, page, config, files):
    uri = page.file.src_uri
    if not (DOCS / uri).exists():  # generated here, links already rewritten
        return markdown
    markdown = MARKER.sub(lambda m: results_block(m.group(1).split(), uri), markdown)
    return rewrite_links(markdown, (DOCS / uri).parent, uri)
