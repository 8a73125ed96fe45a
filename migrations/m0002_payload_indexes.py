"""Migration 2: payload indexes on every physical collection made before they were standard."""

from __future__ import annotations

from app.store import QdrantStore

NUMBER = 2
NAME = "payload indexes"


def apply(store: QdrantStore) -> None:
    """Ensure the "document_id" (keyword) and "context_version" (integer) indexes everywhere."""
    for physical in store.physical_collections():
        store.ensure_point_indexes(physical)
