"""Every document the repository cites exists in it: markdown links and `docs/….md` mentions
in code, docs and READMEs resolve inside the clone (a user's clone has nothing beside it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers.builders import ROOT

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
DOC_MENTION = re.compile(r"\bdocs/[\w./-]+\.md\b")
MARKDOWN = sorted(
    p
    for pattern in (
        "*.md",
        "docs/*.md",
        "*/README.md",
        "clients/*/README.md",
        "*/data/README.md",
        "tests/data/*/README.md",
    )
    for p in ROOT.glob(pattern)
    if ".venv" not in p.parts
)
CODE = sorted(
    p for d in ("app", "workers", "migrations", "bench", "tests") for p in (ROOT / d).rglob("*.py")
)


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_links_resolve(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    broken = [
        target
        for target in LINK.findall(text)
        if "://" not in target
        and not target.startswith("mailto:")
        and not (path.parent / target).exists()
    ]
    assert not broken, f"{path.relative_to(ROOT)} links to missing files: {broken}"


def test_docs_mentioned_in_code_exist() -> None:
    missing = {
        f"{path.relative_to(ROOT)}: {doc}"
        for path in CODE
        for doc in DOC_MENTION.findall(path.read_text(encoding="utf-8"))
        if not (ROOT / doc).exists()
    }
    assert not missing, sorted(missing)


def test_nothing_points_outside_the_repository() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in [*MARKDOWN, *CODE]
        if "../shared" in p.read_text(encoding="utf-8") and p.name != "test_docs.py"
    ]
    assert not offenders


def test_runnable_markers_sit_on_bash_or_python_blocks() -> None:
    """Every `<!-- runnable -->` marker is right above a bash or python fence (else the docs
    test would silently skip a block the author meant to run)."""
    from tests.helpers.runnable import runnable_blocks, sources

    found = [block for path in sources() for block in runnable_blocks(path)]
    assert len([b for b in found if b.needs is None]) >= 5
    marked = [  # a misspelt marker would not match and its block would never run
        line
        for p in sources()
        for line in p.read_text(encoding="utf-8").splitlines()
        if line.startswith("<!--") and "runnable" in line
    ]
    assert len(marked) == len(found), marked
