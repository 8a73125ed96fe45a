"""Migration 1: the meta collection that holds contexts and the schema version."""

from __future__ import annotations

from app.store import QdrantStore

NUMBER = 1
NAME = "meta collection"


def apply(store: QdrantStore) -> None:
    """Create the meta collection: a dummy 1-dim vector, indexes on kind, collection, version, state."""
    store.ensure_meta_collection()
