"""The Qdrant adapter: documents, collection aliases and versioned contexts of cdeq."""

from app.names import parse_physical
from app.store.client import open_client, translated_errors
from app.store.points import Ranking, SearchMode
from app.store.qdrant import QdrantStore
from app.store.records import (
    META_COLLECTION,
    Bm25Stats,
    CollectionInfo,
    ContextRecord,
    ContextSource,
    Hit,
    PointRecord,
    RebuildMarker,
    SparseVector,
    chunk_point_id,
    point_id,
)
from app.store.scan import StoredDocument

__all__ = [
    "META_COLLECTION",
    "Bm25Stats",
    "CollectionInfo",
    "ContextRecord",
    "ContextSource",
    "Hit",
    "PointRecord",
    "QdrantStore",
    "Ranking",
    "RebuildMarker",
    "SearchMode",
    "SparseVector",
    "StoredDocument",
    "chunk_point_id",
    "open_client",
    "parse_physical",
    "point_id",
    "translated_errors",
]
