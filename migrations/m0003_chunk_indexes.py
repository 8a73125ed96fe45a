"""Migration 3: the "chunk_index" payload index that chunked documents are trimmed by."""

from __future__ import annotations

from app.store import QdrantStore

NUMBER = 3
NAME = "chunk index"


def apply(store: QdrantStore) -> None:
    """Ensure every point index (now with "chunk_index", integer) on every physical collection.

    Points written before chunking have no chunk fields and read as chunk 0 of 1, so no point
    is rewritten."""
    for physical in store.physical_collections():
        store.ensure_point_indexes(physical)
