"""QdrantStore: documents, aliases and contexts of cdeq in Qdrant (server or local mode).

A user collection NAME is an alias onto the physical collection ``NAME__c<version>`` built with
context ``version``; contexts and the schema version live as points in the meta collection.

The store is one facade over parts that share one client (`app.store.base.StoreCore`):
`Collections` (physical collections and aliases), `Schema` (meta collection and schema
version), `Points` (documents) and `Contexts` (versioned contexts). Its methods are the
contract the rest of cdeq relies on; the parts hold the implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from qdrant_client import QdrantClient

from app.config import QdrantSettings
from app.errors import NotFound
from app.store.base import StoreCore
from app.store.batches import DEFAULT_MAX_REQUEST_BYTES
from app.store.client import open_client, translated_errors
from app.store.collections import Collections
from app.store.contexts import Contexts
from app.store.filters import SearchFilter
from app.store.points import Points, Ranking
from app.store.records import (
    META_COLLECTION,
    Bm25Stats,
    CollectionInfo,
    ContextRecord,
    Hit,
    PointRecord,
    RebuildMarker,
    SparseVector,
)
from app.store.scan import Scan, StoredDocument
from app.store.schema import Schema
from app.store.sparse_stats import SparseStats


class QdrantStore:
    """The only code in cdeq that talks to Qdrant; every failure surfaces as an ``app.errors`` type."""

    def __init__(
        self,
        client: QdrantClient,
        *,
        dim: int = 768,
        store_text: bool = True,
        upsert_batch_size: int = 256,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        meta_collection: str = META_COLLECTION,
    ) -> None:
        self._core = StoreCore(
            client,
            dim=dim,
            store_text=store_text,
            upsert_batch_size=upsert_batch_size,
            max_request_bytes=max_request_bytes,
            # A separate meta collection lets tests share one server without touching real data.
            meta_collection=meta_collection,
        )
        self._schema = Schema(self._core)
        self._collections = Collections(self._core)
        self._points = Points(self._core, self._collections)
        self._contexts = Contexts(self._core, self._collections)
        self._scan = Scan(self._core)
        self._sparse_stats = SparseStats(self._core)

    @classmethod
    def from_settings(cls, settings: QdrantSettings, *, dim: int = 768) -> QdrantStore:
        """A store on a client opened from ``settings`` (batch size and text storage included)."""
        return cls(
            open_client(settings),
            dim=dim,
            store_text=settings.store_text,
            upsert_batch_size=settings.upsert_batch_size,
        )

    @property
    def client(self) -> QdrantClient:
        """The underlying client, for migrations; use cases go through the store's methods."""
        return self._core.client

    @property
    def dim(self) -> int:
        """Vector size of every physical collection this store creates and writes."""
        return self._core.dim

    @property
    def store_text(self) -> bool:
        """Whether upserts keep document texts in the payload."""
        return self._core.store_text

    @property
    def upsert_batch_size(self) -> int:
        """The most points one upsert request carries."""
        return self._core.upsert_batch_size

    @property
    def max_request_bytes(self) -> int:
        """The most (estimated) bytes one request carries."""
        return self._core.max_request_bytes

    @property
    def meta_collection(self) -> str:
        """The collection that holds contexts and the schema version."""
        return self._core.meta_collection

    def close(self) -> None:
        """Release the client (and, in local mode, the folder lock)."""
        with translated_errors("closing the client"):
            self._core.client.close()

    # ---- schema -------------------------------------------------------------------------------

    def schema_version(self) -> int:
        """The migration number recorded in Qdrant; 0 when never migrated."""
        return self._schema.version()

    def set_schema_version(self, version: int) -> None:
        """Record ``version`` as applied (the meta collection must exist: migration 1 makes it)."""
        self._schema.set_version(version)

    def require_schema(self, minimum: int) -> None:
        """Refuse to work on a Qdrant that lacks migrations this code relies on."""
        self._schema.require(minimum)

    def ensure_meta_collection(self) -> None:
        """Create the meta collection (tiny dummy vector, payload indexes) if absent; idempotent."""
        self._schema.ensure_meta_collection()

    def ensure_point_indexes(self, physical: str) -> None:
        """Payload indexes every physical collection needs for deletes, lookups and filters."""
        self._collections.ensure_point_indexes(physical)

    # ---- collections --------------------------------------------------------------------------

    def physical_name(self, collection: str, version: int) -> str:
        """``NAME__c<version>``, after checking the name and version."""
        return self._collections.physical_name(collection, version)

    def physical_collections(self, collection: str | None = None) -> list[str]:
        """Physical collections (of ``collection``, or of every collection), by name then version."""
        return self._collections.physical_collections(collection)

    def ensure_physical(self, collection: str, version: int) -> str:
        """Create ``NAME__c<version>`` (dot product, ``dim``) with its indexes if absent; idempotent."""
        return self._collections.ensure_physical(collection, version)

    def set_alias(self, collection: str, physical: str) -> None:
        """Point ``collection`` at ``physical``: one atomic request, so readers never see a gap."""
        self._collections.set_alias(collection, physical)

    def resolve(self, collection: str) -> str | None:
        """The physical collection that ``collection`` points at, or None."""
        return self._collections.resolve(collection)

    def collection_exists(self, collection: str) -> bool:
        """Whether the user collection (alias) exists."""
        return self._collections.exists(collection)

    def list_collections(self) -> list[CollectionInfo]:
        """Every user collection with its exact point count, sorted by name."""
        return self._collections.list_collections()

    def drop_collection(self, collection: str) -> None:
        """Delete the alias, every physical collection and every context of ``collection``.

        Safe to repeat after a partial failure; NotFound only when nothing of it was left.
        """
        self._core.check_readable_name(collection)
        current = self._collections.resolve(collection)
        physicals = self._collections.physical_collections(collection)
        contexts = self._contexts.versions(collection, ready_only=False, missing_ok=True)
        if current is None and not physicals and not contexts:
            raise NotFound(f"collection {collection!r} does not exist")
        self._collections.drop(collection, current, physicals)
        self._sparse_stats.delete(physicals)
        self._core.sparse_known.difference_update(physicals)
        if contexts:
            self._contexts.delete_all(collection)
        if self._core.exists(self._core.meta_collection):
            self._contexts.clear_marker(collection)

    # ---- points -------------------------------------------------------------------------------

    def upsert(self, physical: str, points: Sequence[PointRecord]) -> None:
        """Write ``points`` into ``physical`` (wait=True), split by count and request size.

        Point ids derive from the user collection, so a document keeps its id across context
        versions; a document listed twice is written once, with its last record.
        """
        self._points.upsert(physical, points)

    def delete_documents(self, collection: str, document_ids: Sequence[str]) -> int:
        """Delete documents from every physical collection of ``collection``; returns how many
        existed in the live one. A rebuild in progress loses them too, so they cannot come back
        when its alias is switched in."""
        return self._points.delete_documents(collection, document_ids)

    def count(self, collection: str) -> int:
        """Exact number of points (chunks) in ``collection``."""
        return self._points.count(collection)

    def count_documents(self, name: str) -> int:
        """Exact number of documents (chunk-0 points) in a user or physical collection."""
        return self._points.count_documents(name)

    def chunk_counts(self, physical: str, document_ids: Sequence[str]) -> dict[str, int]:
        """document id → chunk count recorded by its chunk 0 in ``physical`` (stored ones)."""
        return self._points.chunk_counts(physical, document_ids)

    def delete_stale_chunks(
        self,
        physical: str,
        chunk_counts: Mapping[str, int],
        previous: Mapping[str, int] | None = None,
    ) -> None:
        """After writing documents' new chunks: delete their chunks with an index at or above
        the new count (document id → count), left by a longer earlier version. ``previous``:
        the counts read before the write (`chunk_counts`), when chunk 0 is written after this
        call (then local mode deletes by id instead of walking every point)."""
        self._points.delete_stale_chunks(physical, chunk_counts, previous)

    def search(
        self,
        collection: str,
        vector: Sequence[float] | np.ndarray | None,
        top_k: int = 10,
        filter: SearchFilter | None = None,
        *,
        physical: str | None = None,
        group: bool = True,
        sparse: SparseVector | None = None,
        ranking: Ranking | None = None,
    ) -> list[Hit]:
        """The ``top_k`` documents of ``collection`` with the highest dot product with ``vector``
        (``ranking`` dense, the default), BM25 score of the ``sparse`` query (sparse), or the
        fusion of both lists (hybrid). Conflict for sparse and hybrid on a collection without
        sparse vectors.

        ``filter``: ``{"metadata.lang": "en", "metadata.tag": ["a", "b"]}`` (all must match; a
        list matches any item) or a ``qdrant_client.models.Filter``. ``physical``: search that
        physical collection of ``collection`` instead of the alias (the version the query
        vector was embedded for, even if the alias moves meanwhile). ``group`` (default): one
        hit per document, its best chunk (``top_k`` counts documents); False: raw chunks.
        """
        return self._points.search(
            collection,
            vector,
            top_k,
            filter,
            physical,
            group=group,
            sparse=sparse,
            ranking=ranking,
        )

    def has_sparse(self, name: str) -> bool:
        """Whether the collection or physical collection ``name`` has the BM25 sparse vectors."""
        return self._collections.has_sparse(name)

    def load_bm25_stats(self, physical: str) -> Bm25Stats:
        """Documents and terms counted into the BM25 vectors of ``physical`` so far."""
        return self._sparse_stats.load(physical)

    def save_bm25_stats(self, physical: str, stats: Bm25Stats) -> None:
        """Record the BM25 statistics of ``physical``."""
        self._sparse_stats.save(physical, stats)

    def get_documents(
        self, collection: str, document_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """document id -> user-facing payload, for those of ``document_ids`` that exist."""
        return self._points.get_documents(collection, document_ids)

    # ---- contexts -----------------------------------------------------------------------------

    def save_context(self, record: ContextRecord) -> None:
        """Store (or overwrite) context ``record.version`` of ``record.collection``, bit-exact."""
        self._contexts.save(record)

    def load_context(self, collection: str, version: int | None = None) -> ContextRecord | None:
        """Context ``version`` of ``collection`` (any state), or with ``version=None`` the highest
        version whose state is "ready"; None when there is no such context."""
        return self._contexts.load(collection, version)

    def next_context_version(self, collection: str) -> int:
        """1 + the highest version among its contexts and physical collections (1 when none).

        Counting physical collections too means a build that crashed before saving its context
        never has its half-filled collection reused by the next build.
        """
        return self._contexts.next_version(collection)

    def context_versions(self, collection: str, *, ready_only: bool) -> list[int]:
        """Versions of the stored contexts of ``collection`` (only "ready" ones with
        ``ready_only``); empty when there are none or no meta collection yet."""
        return self._contexts.versions(collection, ready_only=ready_only, missing_ok=True)

    def delete_context(self, collection: str, version: int) -> None:
        """Delete context ``version`` of ``collection`` (nothing when absent)."""
        self._contexts.delete(collection, version)

    # ---- rebuilds -----------------------------------------------------------------------------

    def save_rebuild_marker(self, marker: RebuildMarker) -> None:
        """Mark a rebuild of ``marker.collection`` in progress (one per collection)."""
        self._contexts.save_marker(marker)

    def load_rebuild_marker(self, collection: str) -> RebuildMarker | None:
        """The rebuild of ``collection`` in progress, or None."""
        return self._contexts.load_marker(collection)

    def rebuild_markers(self) -> list[str]:
        """The collections with a rebuild marker (running or orphaned rebuilds)."""
        return self._contexts.marked_collections()

    def clear_rebuild_marker(self, collection: str) -> None:
        """Forget the rebuild marker of ``collection`` (nothing when absent)."""
        self._contexts.clear_marker(collection)

    def point_hashes(self, physical: str) -> dict[str, str]:
        """point id → content hash of every point of the physical collection ``physical``."""
        return self._scan.hashes(physical)

    def fetch_stored(
        self, physical: str, point_ids: Sequence[str], *, sparse: bool = False
    ) -> list[StoredDocument]:
        """The stored documents of ``physical`` among ``point_ids``, in that order (``sparse``:
        with their BM25 vectors, which ``physical`` must have)."""
        return self._scan.fetch(physical, point_ids, sparse=sparse)

    def delete_points(self, physical: str, point_ids: Sequence[str]) -> None:
        """Delete points by id from the physical collection ``physical``."""
        self._scan.delete(physical, point_ids)

    def count_physical(self, physical: str) -> int:
        """Exact number of points in the physical collection ``physical``."""
        return self._scan.count(physical)

    def count_other_model(self, physical: str, fingerprint: str, *, unstamped: bool = True) -> int:
        """Points of ``physical`` that the model ``fingerprint`` did not write (with
        `unstamped`, those written before points were stamped count too)."""
        return self._scan.count_other_model(physical, fingerprint, unstamped=unstamped)

    def drop_physical(self, physical: str) -> None:
        """Delete one physical collection (never the live one: callers check)."""
        self._scan.drop(physical)
        self._sparse_stats.delete([physical])
        self._core.sparse_known.discard(physical)
