"""Documents as points: validating and writing them, deleting, counting, searching and reading.

Writes go to a physical collection (a build fills one before its alias goes live); reads go to
the user collection's alias. A point's payload is the user-facing payload plus ``collection``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from qdrant_client import models

from app.errors import InvalidInput, NotFound
from app.names import parse_physical
from app.store.base import StoreCore
from app.store.batches import estimate_point_bytes, plan_batches
from app.store.client import translated_errors
from app.store.collections import Collections
from app.store.filters import SearchFilter, build_filter
from app.store.records import Hit, PointRecord, point_id

USER_PAYLOAD_KEYS = ("document_id", "text", "metadata", "content_hash", "context_version")
_IDS_PER_REQUEST = 1024


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
                sizes.append(estimate_point_bytes(self._core.dim, payload))
            except (TypeError, ValueError) as exc:
                problems.append(f"{record.document_id!r}: metadata is not JSON: {exc}")
                continue
            structs.append(
                models.PointStruct(
                    id=point_id(collection, record.document_id),
                    vector=np.asarray(record.vector, dtype=np.float32).tolist(),
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
        vector: Sequence[float] | np.ndarray,
        top_k: int,
        filter: SearchFilter | None,
        physical: str | None = None,
    ) -> list[Hit]:
        self._core.check_readable_name(collection)
        if physical is not None:
            parsed = parse_physical(physical)
            if parsed is None or parsed[0] != collection:
                raise InvalidInput(f"{physical!r} is not a physical collection of {collection!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InvalidInput(f"top_k must be an int >= 1, got {top_k!r}", field="top_k")
        query = self._vector(vector, "query vector")
        query_filter = build_filter(filter)
        with translated_errors(f"searching {collection!r}", collection=collection):
            response = self._core.client.query_points(
                physical or collection,
                query=query,
                limit=top_k,
                query_filter=query_filter,
                with_payload=True,
                with_vectors=False,
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
        if record.model_fingerprint:  # which model wrote it, checked before a version goes live
            payload["model_fingerprint"] = record.model_fingerprint
        return payload


def _user_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {key: payload[key] for key in USER_PAYLOAD_KEYS if key in payload}
