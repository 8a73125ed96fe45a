"""Documents as points: validating and writing them, deleting, counting, searching and reading.

Writes go to a physical collection (a build fills one before its alias goes live); reads go to
the user collection's alias. A point's payload is the user-facing payload plus ``collection``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from qdrant_client import models

from app.errors import Conflict, InvalidInput, NotFound
from app.names import parse_physical
from app.store.base import StoreCore
from app.store.batches import estimate_point_bytes, plan_batches
from app.store.client import translated_errors
from app.store.collections import SPARSE_VECTOR, Collections
from app.store.filters import SearchFilter, build_filter
from app.store.records import Hit, PointRecord, SparseVector, point_id

USER_PAYLOAD_KEYS = ("document_id", "text", "metadata", "content_hash", "context_version")
SPARSE_TERMS_KEY = "bm25_terms"  # payload: the number of BM25 terms of the point's text
_IDS_PER_REQUEST = 1024
# Longest JSON of one sparse entry: an index and a float, with separators.
_BYTES_PER_SPARSE = 36
_DEFAULT_RRF_K = 2  # Qdrant's own: plain Fusion.RRF then, which every server version takes

SearchMode = Literal["dense", "sparse", "hybrid"]


@dataclass(frozen=True)
class Ranking:
    """How a search ranks: one mode, and for hybrid the fusion and its candidate lists."""

    mode: SearchMode = "dense"
    fusion: Literal["rrf", "dbsf"] = "rrf"
    rrf_k: int = _DEFAULT_RRF_K
    dense_prefetch: int = 100
    sparse_prefetch: int = 100


def query_kwargs(
    ranking: Ranking,
    dense: list[float] | None,
    sparse: SparseVector | None,
    top_k: int,
    query_filter: models.Filter | None,
) -> dict[str, Any]:
    """The Query API arguments of one search (query / using / prefetch / fusion / filter), the
    same for `query_points` and `query_points_groups`."""
    if ranking.mode in ("dense", "hybrid") and dense is None:
        raise InvalidInput(f"a {ranking.mode} search needs a dense query vector", field="mode")
    if ranking.mode == "dense":
        return {"query": dense, "query_filter": query_filter}
    if sparse is None:
        raise InvalidInput(f"a {ranking.mode} search needs a sparse query vector", field="mode")
    sparse_query = models.SparseVector(indices=list(sparse.indices), values=list(sparse.values))
    if ranking.mode == "sparse":
        return {"query": sparse_query, "using": SPARSE_VECTOR, "query_filter": query_filter}
    if ranking.mode != "hybrid":
        raise InvalidInput(
            f"mode must be one of ['dense', 'sparse', 'hybrid'], got {ranking.mode!r}",
            field="mode",
        )
    # Each list is filtered itself, so fusion ranks only candidates that pass the filter.
    prefetch = [
        models.Prefetch(query=dense, limit=max(ranking.dense_prefetch, top_k), filter=query_filter),
        models.Prefetch(
            query=sparse_query,
            using=SPARSE_VECTOR,
            limit=max(ranking.sparse_prefetch, top_k),
            filter=query_filter,
        ),
    ]
    fusion: models.Query
    if ranking.fusion == "dbsf":
        fusion = models.FusionQuery(fusion=models.Fusion.DBSF)
    elif ranking.rrf_k == _DEFAULT_RRF_K:
        fusion = models.FusionQuery(fusion=models.Fusion.RRF)
    else:  # a chosen k needs a server of 1.16 or later (local mode takes it)
        fusion = models.RrfQuery(rrf=models.Rrf(k=ranking.rrf_k))
    return {"prefetch": prefetch, "query": fusion, "query_filter": query_filter}


class Points:
    """The documents of user collections, kept in their physical collections."""

    def __init__(self, core: StoreCore, collections: Collections) -> None:
        self._core = core
        self._collections = collections

    def upsert(self, physical: str, points: Sequence[PointRecord]) -> None:
        parsed = parse_physical(physical)
        if parsed is None or physical == self._core.meta_collection:
            raise InvalidInput(f"{physical!r} is not a physical collection name (NAME__c<version>)")
        collection, version = parsed
        problems = [
            f"point #{index}: {problem}"
            for index, record in enumerate(points)
            if (problem := self._point_problem(record, version)) is not None
        ]
        if problems:
            raise InvalidInput(problems, field="points")
        # One request must not carry the same id twice; the last record of a document wins.
        latest = {record.document_id: record for record in points}
        structs: list[models.PointStruct] = []
        sizes: list[int] = []
        for record in latest.values():
            payload = self._payload(collection, record)
            try:
                size = estimate_point_bytes(self._core.dim, payload)
            except (TypeError, ValueError) as exc:
                problems.append(f"{record.document_id!r}: metadata is not JSON: {exc}")
                continue
            dense = np.asarray(record.vector, dtype=np.float32).tolist()
            vector: models.VectorStruct = dense
            if record.sparse is not None:
                # "" is the unnamed (dense) vector beside the named sparse one.
                vector = {
                    "": dense,
                    SPARSE_VECTOR: models.SparseVector(
                        indices=list(record.sparse.indices), values=list(record.sparse.values)
                    ),
                }
                size += _BYTES_PER_SPARSE * len(record.sparse.indices)
            sizes.append(size)
            structs.append(
                models.PointStruct(
                    id=point_id(collection, record.document_id), vector=vector, payload=payload
                )
            )
        if problems:
            raise InvalidInput(problems, field="points")
        for batch in plan_batches(
            sizes, max_points=self._core.upsert_batch_size, max_bytes=self._core.max_request_bytes
        ):
            with translated_errors(f"upserting into {physical!r}", collection=physical):
                self._core.client.upsert(
                    physical, points=structs[batch.start : batch.stop], wait=True
                )

    def delete_documents(self, collection: str, document_ids: Sequence[str]) -> int:
        self._core.check_readable_name(collection)
        live = self._collections.resolve(collection)
        if live is None:
            raise NotFound(f"collection {collection!r} does not exist")
        ids = [point_id(collection, d) for d in dict.fromkeys(document_ids)]
        existing = len(self._retrieve(live, ids, with_payload=False, collection=collection))
        for physical in self._collections.physical_collections(collection):
            for start in range(0, len(ids), _IDS_PER_REQUEST):
                chunk = ids[start : start + _IDS_PER_REQUEST]
                with translated_errors(
                    f"deleting documents from {physical!r}", collection=collection
                ):
                    self._core.client.delete(
                        physical,
                        points_selector=models.PointIdsList(points=list(chunk)),
                        wait=True,
                    )
        return existing

    def count(self, collection: str) -> int:
        self._core.check_readable_name(collection)
        with translated_errors(f"counting {collection!r}", collection=collection):
            return self._core.client.count(collection, exact=True).count

    def search(
        self,
        collection: str,
        vector: Sequence[float] | np.ndarray | None,
        top_k: int,
        filter: SearchFilter | None,
        physical: str | None = None,
        *,
        sparse: SparseVector | None = None,
        ranking: Ranking | None = None,
    ) -> list[Hit]:
        self._core.check_readable_name(collection)
        if physical is not None:
            parsed = parse_physical(physical)
            if parsed is None or parsed[0] != collection:
                raise InvalidInput(f"{physical!r} is not a physical collection of {collection!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InvalidInput(f"top_k must be an int >= 1, got {top_k!r}", field="top_k")
        ranking = ranking or Ranking()
        target = physical or collection
        if ranking.mode != "dense" and not self._collections.has_sparse(target):
            raise Conflict(
                f"collection {collection!r} has no sparse vectors (it was made before cdeq "
                f"wrote them): a {ranking.mode} search needs them; `cdeq context rebuild "
                f"{collection}` adds them"
            )
        dense = None
        if ranking.mode != "sparse" or vector is not None:
            dense = self._vector(vector if vector is not None else [], "query vector")
        kwargs = query_kwargs(ranking, dense, sparse, top_k, build_filter(filter))
        with translated_errors(f"searching {collection!r}", collection=collection):
            response = self._core.client.query_points(
                target, limit=top_k, with_payload=True, with_vectors=False, **kwargs
            )
        hits: list[Hit] = []
        for point in response.points:
            payload = point.payload or {}
            hits.append(
                Hit(str(payload["document_id"]), float(point.score), _user_payload(payload))
            )
        return hits

    def get_documents(
        self, collection: str, document_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        self._core.check_readable_name(collection)
        ids = [point_id(collection, d) for d in dict.fromkeys(document_ids)]
        if not ids and not self._collections.exists(collection):
            raise NotFound(f"collection {collection!r} does not exist")
        found: dict[str, dict[str, Any]] = {}
        for record in self._retrieve(collection, ids, with_payload=True, collection=collection):
            payload = record.payload or {}
            found[str(payload["document_id"])] = _user_payload(payload)
        return found

    def _retrieve(
        self, name: str, ids: list[str], *, with_payload: bool, collection: str
    ) -> list[models.Record]:
        found: list[models.Record] = []
        for start in range(0, len(ids), _IDS_PER_REQUEST):
            with translated_errors(f"reading documents of {collection!r}", collection=collection):
                found.extend(
                    self._core.client.retrieve(
                        name,
                        ids=ids[start : start + _IDS_PER_REQUEST],
                        with_payload=with_payload,
                        with_vectors=False,
                    )
                )
        return found

    def _vector(self, vector: Sequence[float] | np.ndarray, what: str) -> list[float]:
        dim = self._core.dim
        try:
            array = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"{what} is not numeric: {exc}") from None
        if array.shape != (dim,):
            raise InvalidInput(f"{what} must have shape ({dim},), got {array.shape}")
        if not np.isfinite(array).all():
            raise InvalidInput(f"{what} contains NaN or infinity")
        return [float(x) for x in array.tolist()]

    def _point_problem(self, record: PointRecord, version: int) -> str | None:
        if not isinstance(record, PointRecord):
            return f"expected a PointRecord, got {type(record).__name__}"
        if not isinstance(record.document_id, str) or not record.document_id:
            return f"document_id must be a non-empty string, got {record.document_id!r}"
        if not isinstance(record.metadata, Mapping):
            return f"{record.document_id!r}: metadata must be a dict"
        if not isinstance(record.content_hash, str):
            return f"{record.document_id!r}: content_hash must be a string"
        if record.text is not None and not isinstance(record.text, str):
            return f"{record.document_id!r}: text must be a string or None"
        if record.context_version != version or isinstance(record.context_version, bool):
            # A point embedded with another context would be silently wrong in this collection.
            return (
                f"{record.document_id!r}: context_version {record.context_version!r} does not "
                f"match the collection's version {version}"
            )
        try:
            self._vector(record.vector, "vector")
        except InvalidInput as exc:
            return f"{record.document_id!r}: {exc}"
        if record.sparse is not None:
            if not isinstance(record.sparse, SparseVector):
                return f"{record.document_id!r}: sparse must be a SparseVector"
            if not all(0 <= i < 2**32 for i in record.sparse.indices) or len(
                set(record.sparse.indices)
            ) != len(record.sparse.indices):
                return f"{record.document_id!r}: sparse indices must be distinct u32 values"
            if not all(np.isfinite(v) for v in record.sparse.values):
                return f"{record.document_id!r}: sparse values contain NaN or infinity"
        return None

    def _payload(self, collection: str, record: PointRecord) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "document_id": record.document_id,
            "metadata": dict(record.metadata),
            "content_hash": record.content_hash,
            "context_version": record.context_version,
            "collection": collection,
        }
        if self._core.store_text and record.text is not None:
            payload["text"] = record.text
        if record.sparse is not None:
            payload[SPARSE_TERMS_KEY] = record.sparse_terms
        return payload


def _user_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {key: payload[key] for key in USER_PAYLOAD_KEYS if key in payload}
