"""The code blocks of the docs marked runnable: `<!-- runnable -->` on the line right above a
```bash or ```python fence; `<!-- runnable needs=network -->` (or `needs=gpu`) marks one that
cannot run in CI, which the docs test skips with that reason."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.builders import ROOT

MARKER = re.compile(r"^<!-- runnable(?: needs=(?P<needs>[a-z]+))? -->\s*$")
FENCE = re.compile(r"^```(?P<lang>[a-z]*)\s*$")
NEEDS = {"network": "needs the network", "gpu": "needs a GPU"}
LANGS = ("bash", "python")


def sources() -> list[Path]:
    """README.md, docs/*.md and the client package's README."""
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "clients" / "python" / "README.md",
    ]


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the fence, 1-based
    lang: str
    needs: str | None
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def runnable_blocks(path: Path) -> list[Block]:
    """The marked blocks of `path`, in order; ValueError for a marker that is not right above a
    bash or python fence, or an unknown `needs`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    for i, line in enumerate(lines):
        marker = MARKER.match(line)
        if not marker:
            continue
        where = f"{path.relative_to(ROOT)}:{i + 1}"
        fence = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        if fence is None or fence["lang"] not in LANGS:
            raise ValueError(
                f"{where}: a runnable marker must sit right above ```bash or ```python"
            )
        needs = marker["needs"]
        if needs is not None and needs not in NEEDS:
            raise ValueError(f"{where}: needs={needs}: use one of {', '.join(NEEDS)}")
        end = next((j for j in range(i + 2, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise ValueError(f"{where}: the code block is never closed")
        code = "\n".join(lines[i + 2 : end]) + "\n"
        found.append(Block(path, i + 2, fence["lang"], needs, code))
    return found
