"""BM25 sparse vectors from the model's own tokenizer: terms, document weights, query weights.

Pure: no Qdrant, no settings. The IDF half of BM25 is not here: Qdrant applies it at search
time (`Modifier.IDF`), so a document's vector never has to change when the corpus grows.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tokenizers import Tokenizer

TermScheme = Literal["words", "pieces"]
TERM_SCHEMES: tuple[TermScheme, ...] = ("words", "pieces")
# Sparse indices are u32 in Qdrant; words hash into the lower 31 bits, far above any vocabulary.
_WORD_SPACE = 1 << 31


@dataclass(frozen=True)
class SparseVector:
    """Sorted distinct term indices and their weights (what Qdrant stores under `bm25`)."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.indices) != len(self.values):
            raise ValueError(
                f"sparse vector: {len(self.indices)} indices but {len(self.values)} values"
            )


@dataclass(frozen=True)
class Bm25Stats:
    """What the document side needs of a physical collection: documents and terms so far."""

    documents: int = 0
    terms: int = 0
    signature: str = ""  # the `Bm25Terms.signature` the vectors were built with

    def average_length(self, more_documents: int = 0, more_terms: int = 0) -> float:
        """The average document length (terms) with a batch about to be written counted in."""
        documents = self.documents + more_documents
        return (self.terms + more_terms) / documents if documents else 1.0


class Bm25Terms:
    """Lower-cased text → term ids with the model's tokenizer.

    ``words``: the tokenizer's own pre-tokenized words (its word boundaries, lower-cased),
    each hashed to one index; punctuation-only words are dropped. ``pieces``: the word-piece
    ids themselves. docs/search-modes.md says why words are the default."""

    def __init__(self, tokenizer: Any, scheme: TermScheme = "words") -> None:
        if scheme not in TERM_SCHEMES:
            raise ValueError(f"term scheme must be one of {list(TERM_SCHEMES)}, got {scheme!r}")
        backend = (
            tokenizer.backend_tokenizer if hasattr(tokenizer, "backend_tokenizer") else tokenizer
        )
        spec = backend.to_str()
        # A private engine: no truncation (a long text counts all its terms), no padding.
        engine = Tokenizer.from_str(spec)
        engine.no_truncation()
        engine.no_padding()
        self._engine = engine
        self.scheme = scheme
        special = getattr(tokenizer, "all_special_ids", None) or []
        self._special = frozenset(int(i) for i in special)
        digest = hashlib.sha256(spec.encode("utf-8")).hexdigest()[:16]
        # Vectors built under another signature are not comparable: a rebuild recomputes them.
        self.signature = f"{scheme}:{digest}"

    def terms(self, texts: Sequence[str]) -> list[list[int]]:
        """The term ids of each text, in order, repeats kept (their count is the term frequency)."""
        lowered = [t.lower() for t in texts]
        encodings = self._engine.encode_batch(lowered, add_special_tokens=False)
        if self.scheme == "pieces":
            return [[i for i in e.ids if i not in self._special] for e in encodings]
        out: list[list[int]] = []
        for text, encoding in zip(lowered, encodings, strict=True):
            words: dict[int, tuple[int, int]] = {}
            for word, (start, end) in zip(encoding.word_ids, encoding.offsets, strict=True):
                if word is None:
                    continue
                first, last = words.get(word, (start, end))
                words[word] = (min(first, start), max(last, end))
            ids = []
            for start, end in words.values():
                word_text = text[start:end]
                if any(c.isalnum() for c in word_text):
                    ids.append(zlib.crc32(word_text.encode("utf-8")) % _WORD_SPACE)
            out.append(ids)
        return out


def document_vector(
    terms: Sequence[int], average_length: float, k1: float, b: float
) -> SparseVector:
    """BM25's document side: tf·(k1+1) / (tf + k1·(1 − b + b·|d|/avgdl)) for each term."""
    counts = Counter(terms)
    norm = k1 * (1.0 - b + b * len(terms) / max(average_length, 1e-9))
    indices = tuple(sorted(counts))
    values = tuple(counts[i] * (k1 + 1.0) / (counts[i] + norm) for i in indices)
    return SparseVector(indices, values)


def query_vector(terms: Sequence[int]) -> SparseVector:
    """BM25's query side: each distinct term once, weight 1 (Qdrant multiplies in the IDF)."""
    indices = tuple(sorted(set(terms)))
    return SparseVector(indices, tuple(1.0 for _ in indices))


def document_vectors(
    terms: Sequence[Sequence[int]], stats: Bm25Stats, k1: float, b: float
) -> tuple[list[SparseVector], Bm25Stats]:
    """The vectors of a batch, normalised with the average length *including* the batch, and
    the stats with the batch counted in."""
    lengths = [len(t) for t in terms]
    average = stats.average_length(len(terms), sum(lengths))
    vectors = [document_vector(t, average, k1, b) for t in terms]
    updated = Bm25Stats(stats.documents + len(terms), stats.terms + sum(lengths), stats.signature)
    return vectors, updated
