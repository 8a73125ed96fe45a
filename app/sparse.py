"""BM25 vectors of points as they are written, and of queries: the use-case side of hybrid
search (the term rules are `app.bm25`; Qdrant stores the vectors and applies the IDF).

The average document length of a physical collection is counted as batches arrive (kept in
the meta collection); each point keeps the weights computed with the average of its time.
docs/search-modes.md says what that means when the average drifts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from app.bm25 import Bm25Stats, Bm25Terms, SparseVector, document_vectors, query_vector
from app.errors import Conflict
from app.service import Cdeq

log = logging.getLogger(__name__)

Carried = tuple[SparseVector, int]  # a stored vector and its text's term count


def terms_for(svc: Cdeq, signature: str) -> Bm25Terms:
    """The term rules a collection's vectors were built with (its recorded `signature`), so a
    changed CDEQ_SEARCH__BM25_TERMS never mixes two kinds of term in one collection."""
    current = svc.bm25
    if not signature or signature == current.signature:
        return current
    scheme = signature.split(":", 1)[0]
    other = Bm25Terms(svc.embedder.tokenizer, scheme)  # type: ignore[arg-type]
    if other.signature != signature:
        raise Conflict(
            f"the collection's BM25 vectors were built with another tokenizer ({signature}); "
            "a rebuild (`cdeq context rebuild NAME`) recomputes them"
        )
    return other


def writes_sparse(svc: Cdeq, physical: str) -> bool:
    """Whether points written to `physical` get BM25 vectors (on, and the collection has them)."""
    return svc.settings.search.sparse and svc.store.has_sparse(physical)


def document_sparse(
    svc: Cdeq,
    physical: str,
    texts: Sequence[str],
    carried: Sequence[Carried | None] | None = None,
) -> list[Carried] | None:
    """(vector, term count) of each text about to be written to `physical`, counting the batch
    into the collection's statistics; None when `physical` takes no sparse vectors. A
    `carried` entry (a rebuild's stored vector) is kept as it is instead of recomputed."""
    if not writes_sparse(svc, physical):
        return None
    store = svc.store
    stats = store.load_bm25_stats(physical)
    rules = terms_for(svc, stats.signature)
    settings = svc.settings.search
    kept = list(carried) if carried is not None else [None] * len(texts)
    todo = [i for i, c in enumerate(kept) if c is None]
    carried_terms = sum(c[1] for c in kept if c is not None)
    base = Bm25Stats(
        stats.documents + len(texts) - len(todo), stats.terms + carried_terms, rules.signature
    )
    terms = rules.terms([texts[i] for i in todo])
    vectors, updated = document_vectors(terms, base, settings.bm25_k1, settings.bm25_b)
    out: list[Carried | None] = list(kept)
    for i, vector, t in zip(todo, vectors, terms, strict=True):
        out[i] = (vector, len(t))
    # Read, add, write: two writers at once may lose one's counts. The average is an estimate
    # either way (re-ingested documents count twice, deletes are not taken off).
    store.save_bm25_stats(physical, updated)
    return [c for c in out if c is not None]


def query_sparse(svc: Cdeq, physical: str, text: str) -> SparseVector:
    """The BM25 query vector of `text` for `physical`: each distinct term once, weight 1."""
    rules = terms_for(svc, svc.store.load_bm25_stats(physical).signature)
    return query_vector(rules.terms([text])[0])


def carries_over(svc: Cdeq, source: str, target: str) -> bool:
    """Whether a rebuild may copy the BM25 vectors of `source` into `target`: both have them
    and they were built with the same term rules (tokenizer and scheme)."""
    if not (writes_sparse(svc, target) and svc.store.has_sparse(source)):
        return False
    built = svc.store.load_bm25_stats(source).signature
    wanted = svc.store.load_bm25_stats(target).signature or svc.bm25.signature
    return bool(built) and built == wanted
