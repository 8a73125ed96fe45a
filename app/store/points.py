"""Documents as points: validating and writing them, deleting, counting, searching and reading.

A document is one point per chunk (a short one is one point, chunk 0, with the id it always
had). Writes go to a physical collection (a build fills one before its alias goes live); reads
go to the user collection's alias. A point's payload is the user-facing payload plus
``collection``. Points written before chunking have no chunk fields: they read as chunk 0 of 1.
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
from app.store.collections import SPARSE_VECTOR, Collections, only_chunk_zero
from app.store.filters import SearchFilter, build_filter
from app.store.records import Hit, PointRecord, SparseVector, chunk_point_id, point_id

CHUNK_KEYS = ("chunk_index", "chunk_count", "char_start", "char_end")
USER_PAYLOAD_KEYS = (
    "document_id",
    "text",
    "metadata",
    "content_hash",
    "context_version",
    *CHUNK_KEYS,
)
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


def chunk_fields(payload: Mapping[str, Any]) -> tuple[int, int, int, int | None]:
    """(chunk_index, chunk_count, char_start, char_end) of a stored payload; a point written
    before chunking is chunk 0 of 1 covering its text."""
    text = payload.get("text")
    start = int(payload.get("char_start", 0))
    end = payload.get("char_end")
    if end is None and isinstance(text, str):
        end = start + len(text)
    return (
        int(payload.get("chunk_index", 0)),
        int(payload.get("chunk_count", 1)),
        start,
        None if end is None else int(end),
    )


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
        # One request must not carry the same id twice; the last record of a chunk wins.
        latest = {(record.document_id, record.chunk_index): record for record in points}
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
                    id=chunk_point_id(collection, record.document_id, record.chunk_index),
                    vector=vector,
                    payload=payload,
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
        unique = list(dict.fromkeys(document_ids))
        ids = [point_id(collection, d) for d in unique]
        existing = len(self._retrieve(live, ids, with_payload=False, collection=collection))
        # By document id, not point id: every chunk goes, however many the document had.
        for physical in self._collections.physical_collections(collection):
            for start in range(0, len(unique), _IDS_PER_REQUEST):
                group = unique[start : start + _IDS_PER_REQUEST]
                with translated_errors(
                    f"deleting documents from {physical!r}", collection=collection
                ):
                    self._core.client.delete(
                        physical,
                        points_selector=models.FilterSelector(filter=_documents_filter(group)),
                        wait=True,
                    )
        return existing

    def chunk_counts(self, physical: str, document_ids: Sequence[str]) -> dict[str, int]:
        """document id → the chunk count its chunk 0 records (1 for a point written before
        chunking); documents not stored are left out."""
        collection = self._check_physical(physical)
        ids = [point_id(collection, d) for d in dict.fromkeys(document_ids)]
        found: dict[str, int] = {}
        for start in range(0, len(ids), _IDS_PER_REQUEST):
            with translated_errors(f"reading chunk counts of {physical!r}", collection=physical):
                records = self._core.client.retrieve(
                    physical,
                    ids=ids[start : start + _IDS_PER_REQUEST],
                    with_payload=["document_id", "chunk_count"],
                    with_vectors=False,
                )
            for r in records:
                payload = r.payload or {}
                found[str(payload.get("document_id"))] = int(payload.get("chunk_count", 1))
        return found

    def _check_physical(self, physical: str) -> str:
        parsed = parse_physical(physical)
        if parsed is None or physical == self._core.meta_collection:
            raise InvalidInput(f"{physical!r} is not a physical collection name (NAME__c<version>)")
        return parsed[0]

    def delete_stale_chunks(
        self,
        physical: str,
        chunk_counts: Mapping[str, int],
        previous: Mapping[str, int] | None = None,
    ) -> None:
        """Delete the chunks of each document whose index is at least its new chunk count
        (what a longer earlier version left). Run after the new chunks are written, so a
        search finds the document at every moment.

        `previous` (the counts chunk 0 recorded before this write): in local mode, delete
        those ids (a filter there walks every point in Python: seconds at 50k points). Safe
        when chunk 0 is written after this: chunk 0's count then always covers every chunk
        left behind. Without it, and with a server, by filter on the indexed fields."""
        collection = self._check_physical(physical)
        if previous is not None and self._core.local:
            ids = [
                chunk_point_id(collection, document_id, index)
                for document_id, count in chunk_counts.items()
                for index in range(count, previous.get(document_id, 0))
            ]
            for start in range(0, len(ids), _IDS_PER_REQUEST):
                with translated_errors(f"trimming chunks in {physical!r}", collection=physical):
                    self._core.client.delete(
                        physical,
                        points_selector=models.PointIdsList(
                            points=list(ids[start : start + _IDS_PER_REQUEST])
                        ),
                        wait=True,
                    )
            return
        by_count: dict[int, list[str]] = {}
        for document_id, count in chunk_counts.items():
            by_count.setdefault(count, []).append(document_id)
        for count, documents in sorted(by_count.items()):
            for start in range(0, len(documents), _IDS_PER_REQUEST):
                condition = _documents_filter(documents[start : start + _IDS_PER_REQUEST])
                stale = models.Filter(
                    must=[
                        condition,
                        models.FieldCondition(key="chunk_index", range=models.Range(gte=count)),
                    ]
                )
                with translated_errors(f"trimming chunks in {physical!r}", collection=physical):
                    self._core.client.delete(
                        physical, points_selector=models.FilterSelector(filter=stale), wait=True
                    )

    def count_documents(self, name: str) -> int:
        """Distinct documents of a (user or physical) collection: its chunk-0 points."""
        with translated_errors(f"counting documents of {name!r}", collection=name):
            return self._core.client.count(name, count_filter=only_chunk_zero(), exact=True).count

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
        group: bool = True,
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
        name = physical or collection
        if ranking.mode != "dense" and not self._collections.has_sparse(name):
            raise Conflict(
                f"collection {collection!r} has no sparse vectors (it was made before cdeq "
                f"wrote them): a {ranking.mode} search needs them; `cdeq context rebuild "
                f"{collection}` adds them"
            )
        dense = None
        if ranking.mode != "sparse" or vector is not None:
            dense = self._vector(vector if vector is not None else [], "query vector")
        # Hybrid candidates are points (chunks): CDEQ_SEARCH__*_PREFETCH bound both lists.
        kwargs = query_kwargs(ranking, dense, sparse, top_k, build_filter(filter))
        with translated_errors(f"searching {collection!r}", collection=collection):
            points = self._query(
                name, group=group, limit=top_k, with_payload=True, with_vectors=False, **kwargs
            )
        return [_hit(point.payload or {}, float(point.score)) for point in points]

    def _query(self, name: str, *, group: bool, **query: Any) -> list[models.ScoredPoint]:
        """The one place a search reaches Qdrant. `group`: the best chunk of each of the
        `limit` best documents (Qdrant's group-by on the indexed document_id, one slot per
        document); else the `limit` best points. Any other query argument goes to both."""
        client = self._core.client
        if not group:
            return list(client.query_points(name, **query).points)
        if not self._core.local:
            groups = client.query_points_groups(
                name, group_by="document_id", group_size=1, **query
            ).groups
            return [g.hits[0] for g in groups if g.hits]
        # Local mode groups in Python over every point (seconds at 50k points). The same
        # answer, fast: the best points in score order, more of them until `limit` distinct
        # documents appear; a document's first point is its best chunk, and the documents in
        # order of first appearance are the documents ranked by their best chunk.
        limit = int(query.pop("limit"))
        fetch = max(4 * limit, 32)
        while True:
            points = client.query_points(name, limit=fetch, **query).points
            best: dict[str, models.ScoredPoint] = {}
            for point in points:
                best.setdefault(str((point.payload or {}).get("document_id")), point)
                if len(best) == limit:
                    return list(best.values())
            if len(points) < fetch:
                return list(best.values())
            fetch *= 4

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
            document_id = str(payload["document_id"])
            found[document_id] = self._whole_document(collection, document_id, payload)
        return found

    def _whole_document(
        self, collection: str, document_id: str, first: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The user payload of a document from its chunk 0, with the text of all its chunks
        joined back (overlaps removed) when it has more than one."""
        payload = _user_payload(first)
        count = chunk_fields(first)[1]
        if count <= 1 or not isinstance(first.get("text"), str):
            return payload
        ids = [chunk_point_id(collection, document_id, i) for i in range(1, count)]
        rest = sorted(
            (chunk_fields(r.payload or {}), (r.payload or {}).get("text"))
            for r in self._retrieve(collection, ids, with_payload=True, collection=collection)
        )
        text = str(first["text"])
        end = chunk_fields(first)[3] or len(text)
        for (_, _, start, chunk_end), chunk_text in rest:
            if isinstance(chunk_text, str) and chunk_end is not None and chunk_end > end:
                text += chunk_text[end - start :]
                end = chunk_end
        payload["text"] = text
        payload["char_end"] = end
        for key in ("chunk_index", "char_start"):
            payload.pop(key, None)
        return payload

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
        index, count, start, end = (
            record.chunk_index,
            record.chunk_count,
            record.char_start,
            record.char_end,
        )
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (index, count, start)):
            return f"{record.document_id!r}: chunk_index, chunk_count and char_start must be ints"
        if not 0 <= index < count:
            return f"{record.document_id!r}: chunk_index {index} is not in [0, {count})"
        if start < 0 or (end is not None and (not isinstance(end, int) or end < start)):
            return f"{record.document_id!r}: char range [{start}, {end}) is not valid"
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
            "chunk_index": record.chunk_index,
            "chunk_count": record.chunk_count,
            "char_start": record.char_start,
        }
        char_end = record.char_end
        if char_end is None and record.text is not None:
            char_end = record.char_start + len(record.text)
        if char_end is not None:
            payload["char_end"] = char_end
        if self._core.store_text and record.text is not None:
            payload["text"] = record.text
        if record.sparse is not None:
            payload[SPARSE_TERMS_KEY] = record.sparse_terms
        if record.model_fingerprint:  # which model wrote it, checked before a version goes live
            payload["model_fingerprint"] = record.model_fingerprint
        return payload


def _user_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {key: payload[key] for key in USER_PAYLOAD_KEYS if key in payload}


def _hit(payload: Mapping[str, Any], score: float) -> Hit:
    index, count, start, end = chunk_fields(payload)
    return Hit(str(payload["document_id"]), score, _user_payload(payload), index, count, start, end)


def _documents_filter(document_ids: Sequence[str]) -> models.Filter:
    return models.Filter(
        must=[
            models.FieldCondition(key="document_id", match=models.MatchAny(any=list(document_ids)))
        ]
    )
