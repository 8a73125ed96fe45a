"""Make examples/docs.jsonl: a seeded, varied sample of real texts for the quick start.

    python examples/make_docs.py SOURCE [--out examples/docs.jsonl] [--n 360] [--seed 0]

SOURCE is `random_docs.txt` from the public jxmorris12/cde repository (MIT License,
Copyright (c) 2024 Cornell University), one text per line. Only this script reads it: cdeq
never needs it at run time, and the output file is committed. See examples/README.md.

Kept: lines of 100-2,000 characters (after trimming spaces) that look like prose: at least 15
words, mostly letters, no control characters, no replacement characters, no `_URL_n_`
placeholders, no run-together strings over 40 characters; each distinct text once. The sample is
stratified by length so short, medium and long texts keep their share of that pool.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

MIN_CHARS, MAX_CHARS = 100, 2000
MIN_WORDS = 15
MIN_LETTER_SHARE = 0.7  # letters among non-space characters
MAX_WORD_CHARS = 40
PLACEHOLDER = re.compile(r"_URL_\d+_")
BUCKETS = (("short", 0, 299), ("medium", 300, 599), ("long", 600, MAX_CHARS))
OUT = Path(__file__).resolve().parent / "docs.jsonl"


def length_bucket(chars: int) -> str:
    return next(name for name, lo, hi in BUCKETS if lo <= chars <= hi)


def looks_clean(text: str) -> bool:
    """Prose of a sensible length, not markup debris or a garbled line."""
    if not MIN_CHARS <= len(text) <= MAX_CHARS:
        return False
    if "\ufffd" in text or PLACEHOLDER.search(text):
        return False
    if any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in text):  # control characters, \t, \r
        return False
    words = text.split()
    if len(words) < MIN_WORDS or max(len(w) for w in words) > MAX_WORD_CHARS:
        return False
    visible = [c for c in text if not c.isspace()]
    return sum(c.isalpha() for c in visible) >= MIN_LETTER_SHARE * len(visible)


def candidates(source: Path) -> list[tuple[int, str]]:
    """(1-based line number, trimmed text) of every clean line, first occurrence of each text."""
    seen: set[str] = set()
    out = []
    # split on "\n" only, so line numbers match `sed -n Np` / an editor on the original file
    for number, line in enumerate(source.read_bytes().decode("utf-8").split("\n"), start=1):
        text = line.strip()
        if text in seen or not looks_clean(text):
            continue
        seen.add(text)
        out.append((number, text))
    return out


def sample(pool: list[tuple[int, str]], n: int, seed: int) -> list[tuple[int, str]]:
    """n items, each length bucket in proportion to its share of the pool; shuffled (seeded)."""
    rng = random.Random(seed)
    by_bucket: dict[str, list[tuple[int, str]]] = {name: [] for name, _, _ in BUCKETS}
    for item in pool:
        by_bucket[length_bucket(len(item[1]))].append(item)
    chosen: list[tuple[int, str]] = []
    for i, items in enumerate(by_bucket.values()):
        # the last bucket takes the rounding remainder, so the total is exactly n
        k = n - len(chosen) if i == len(BUCKETS) - 1 else round(n * len(items) / len(pool))
        chosen += rng.sample(items, min(k, len(items)))
    rng.shuffle(chosen)
    return chosen


def record(index: int, number: int, text: str) -> dict[str, object]:
    return {
        "id": f"doc-{index:04d}",
        "text": text,
        "metadata": {
            "source": "cde-random-docs",
            "line": number,
            "chars": len(text),
            "words": len(text.split()),
            "length": length_bucket(len(text)),
            # a '?' early on: the snippet opens with a question (a Q&A or how-to page)
            "question": "?" in text[:150],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="random_docs.txt (one text per line)")
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"default: {OUT.name} beside this script"
    )
    parser.add_argument("--n", type=int, default=360, help="how many documents")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    pool = candidates(args.source)
    if len(pool) < args.n:
        parser.error(f"{args.source}: only {len(pool)} clean texts, fewer than --n {args.n}")
    picked = sample(pool, args.n, args.seed)
    lines = [
        json.dumps(record(i, number, text), ensure_ascii=False)
        for i, (number, text) in enumerate(picked, start=1)
    ]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    counts = {name: sum(length_bucket(len(t)) == name for _, t in picked) for name, _, _ in BUCKETS}
    print(f"{args.out}: {len(lines)} documents from {len(pool)} clean texts; {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
