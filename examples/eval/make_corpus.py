"""Write examples/eval/corpus.jsonl (BEIR layout) from examples/docs.jsonl.

Each document keeps its id as `_id` and its text as `text`; `title` is empty, because the
texts have no separate title (a page's title, where it has one, is already the start of its
text). Run from the repository root: `python examples/eval/make_corpus.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "docs.jsonl"


def main() -> None:
    with (
        SOURCE.open(encoding="utf-8") as src,
        (HERE / "corpus.jsonl").open("w", encoding="utf-8") as out,
    ):
        for line in src:
            if line.strip():
                doc = json.loads(line)
                row = {"_id": doc["id"], "title": "", "text": doc["text"]}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
