"""Generic context texts: what stage 1 sees when a collection has (almost) no corpus.

The CDE authors used random documents for this case (MTEB 63.8 instead of 65.00 with a real
corpus). These are seeded pseudo-sentences over a built-in word list, so every install
produces the same generic context without shipping a corpus.
"""

from __future__ import annotations

import random
from functools import cache
from importlib import resources


@cache
def word_list() -> tuple[str, ...]:
    text = resources.files("app.data").joinpath("words.txt").read_text(encoding="utf-8")
    return tuple(dict.fromkeys(text.split()))


def generic_texts(n: int, seed: int = 0, *, min_words: int = 8, max_words: int = 80) -> list[str]:
    """`n` distinct, varied pseudo-documents, identical for the same (n, seed)."""
    rng = random.Random(seed)
    words = word_list()
    texts: list[str] = []
    for i in range(n):
        length = rng.randint(min_words, max_words)
        body = " ".join(rng.choice(words) for _ in range(length))
        texts.append(f"{body.capitalize()}. ({i})")
    return texts
