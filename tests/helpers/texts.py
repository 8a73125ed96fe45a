"""Test texts that a tiny random model can tell apart.

A random 2-layer model mean-pools token states, so texts drawn from one shared word list all
look alike (cosine ≈ 0.97) and self-retrieval hangs on margins of 1e-4. Giving each text its
own small "topic" vocabulary keeps self-retrieval margins above 5e-3 for hundreds of texts."""

from __future__ import annotations

import random

from app.model.generic import word_list


def topical_texts(
    n: int, seed: int = 0, *, topic_words: int = 12, min_words: int = 30, max_words: int = 100
) -> list[str]:
    rng = random.Random(seed)
    words = word_list()
    texts = []
    for _ in range(n):
        vocabulary = rng.sample(words, topic_words)
        texts.append(
            " ".join(rng.choice(vocabulary) for _ in range(rng.randint(min_words, max_words)))
        )
    return texts
