"""Reading and trimming one physical collection directly: what a rebuild needs.

A rebuild re-embeds the documents of the live physical collection into the next one, and its
catch-up pass compares the two by point id and content hash. These requests name a physical
collection (never the alias), so they keep working while the alias moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qdrant_client import models

from app.errors import InvalidInput
from app.names import parse_physical
from app.store.base import StoreCore
from app.store.client import translated_errors
from app.store.collections import SPARSE_VECTOR
from app.store.points import chunk_fields
from app.store.records import SparseVector

_PAGE = 1024


@dataclass(frozen=True)
class StoredDocument:
    """One stored point: a document's chunk (text is None when not stored). A point written
    before chunking reads as chunk 0 of 1."""

    point_id: str
    document_id: str
    text: str | None
    metadata: dict[str, Any]
    content_hash: str
    chunk_index: int = 0
    chunk_count: int = 1
    char_start: int = 0
    char_end: int | None = None
    # The stored BM25 vector and its text's term count (None: the point has none, or they
    # were not asked for), so a rebuild can carry them over instead of recomputing.
    sparse: SparseVector | None = None
    sparse_terms: int = 0


def _version_key(payload: dict[str, Any]) -> str:
    """What tells two stored versions of a point apart: the document's content hash and the
    chunk's place (a re-ingest with other chunk settings keeps the hash, not the places)."""
    index, count, start, _ = chunk_fields(payload)
    return f"{payload.get('content_hash', '')}|{index}/{count}|{start}"


class Scan:
    """Point-level reads and deletes on a named physical collection."""

    def __init__(self, core: StoreCore) -> None:
        self._core = core

    def _check(self, physical: str) -> str:
        if parse_physical(physical) is None or physical == self._core.meta_collection:
            raise InvalidInput(f"{physical!r} is not a physical collection name (NAME__c<version>)")
        return physical

    def hashes(self, physical: str) -> dict[str, str]:
        """point id → version key (content hash and chunk place) of every point of
        ``physical``, scrolled in point-id order."""
        self._check(physical)
        found: dict[str, str] = {}
        offset: models.ExtendedPointId | None = None
        while True:
            with translated_errors(f"scrolling {physical!r}", collection=physical):
                records, offset = self._core.client.scroll(
                    physical,
                    limit=_PAGE,
                    offset=offset,
                    with_payload=["content_hash", "chunk_index", "chunk_count", "char_start"],
                    with_vectors=False,
                )
            for r in records:
                found[str(r.id)] = _version_key(r.payload or {})
            if offset is None:
                return found

    def fetch(
        self, physical: str, point_ids: Sequence[str], *, sparse: bool = False
    ) -> list[StoredDocument]:
        """The stored documents among ``point_ids`` (absent ones are left out), in that order;
        ``sparse``: with their BM25 vectors (``physical`` must have them)."""
        self._check(physical)
        by_id: dict[str, StoredDocument] = {}
        for start in range(0, len(point_ids), _PAGE):
            with translated_errors(f"reading points of {physical!r}", collection=physical):
                records = self._core.client.retrieve(
                    physical,
                    ids=list(point_ids[start : start + _PAGE]),
                    with_payload=True,
                    with_vectors=[SPARSE_VECTOR] if sparse else False,
                )
            for r in records:
                payload = r.payload or {}
                text = payload.get("text")
                index, count, start, end = chunk_fields(payload)
                stored = r.vector.get(SPARSE_VECTOR) if isinstance(r.vector, dict) else None
                terms = payload.get("bm25_terms")
                by_id[str(r.id)] = StoredDocument(
                    point_id=str(r.id),
                    document_id=str(payload.get("document_id", "")),
                    text=text if isinstance(text, str) else None,
                    metadata=dict(payload.get("metadata") or {}),
                    content_hash=str(payload.get("content_hash", "")),
                    chunk_index=index,
                    chunk_count=count,
                    char_start=start,
                    char_end=end,
                    sparse=(
                        SparseVector(tuple(stored.indices), tuple(stored.values))
                        if isinstance(stored, models.SparseVector) and isinstance(terms, int)
                        else None
                    ),
                    sparse_terms=terms if isinstance(terms, int) else 0,
                )
        return [by_id[i] for i in point_ids if i in by_id]

    def delete(self, physical: str, point_ids: Sequence[str]) -> None:
        self._check(physical)
        for start in range(0, len(point_ids), _PAGE):
            with translated_errors(f"deleting points of {physical!r}", collection=physical):
                self._core.client.delete(
                    physical,
                    points_selector=models.PointIdsList(
                        points=list(point_ids[start : start + _PAGE])
                    ),
                    wait=True,
                )

    def count(self, physical: str) -> int:
        self._check(physical)
        with translated_errors(f"counting {physical!r}", collection=physical):
            return int(self._core.client.count(physical, exact=True).count)

    def count_other_model(self, physical: str, fingerprint: str, *, unstamped: bool) -> int:
        """Points of ``physical`` stamped with another model than ``fingerprint``, and with
        ``unstamped`` those without a stamp too."""
        self._check(physical)
        key = "model_fingerprint"
        other: list[models.Condition] = [
            models.FieldCondition(key=key, match=models.MatchValue(value=fingerprint))
        ]
        if not unstamped:
            other.append(models.IsEmptyCondition(is_empty=models.PayloadField(key=key)))
        with translated_errors(f"counting {physical!r}", collection=physical):
            found = self._core.client.count(
                physical, count_filter=models.Filter(must_not=other), exact=True
            )
        return int(found.count)

    def drop(self, physical: str) -> None:
        """Delete ``physical`` (nothing when it is already gone)."""
        self._check(physical)
        if self._core.exists(physical):
            with translated_errors(f"deleting collection {physical!r}"):
                self._core.client.delete_collection(physical)
