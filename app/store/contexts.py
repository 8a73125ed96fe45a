"""Versioned contexts of collections, kept as points of the meta collection.

Each context is one point whose id derives from (collection, version); its payload holds the
stage-1 dataset embeddings bit-exact (little-endian float32, base64) and their provenance.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
from qdrant_client import models

from app.errors import CdeqError, InvalidInput
from app.names import parse_physical
from app.store.base import StoreCore
from app.store.batches import estimate_point_bytes
from app.store.collections import Collections
from app.store.records import POINT_NAMESPACE, ContextRecord, ContextSource, RebuildMarker
from app.store.schema import META_DUMMY_VECTOR

_SCROLL_PAGE = 256
_CONTEXT_SOURCES = tuple(source.value for source in ContextSource)


def context_point_id(collection: str, version: int) -> str:
    """Id of the meta point that holds context ``version`` of ``collection``."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"context\x00{collection}\x00{version}"))


def rebuild_point_id(collection: str) -> str:
    """Id of the meta point that marks a rebuild of ``collection`` in progress."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"rebuild\x00{collection}"))


class Contexts:
    """Saving, loading, numbering and deleting the contexts of user collections."""

    def __init__(self, core: StoreCore, collections: Collections) -> None:
        self._core = core
        self._collections = collections

    def save(self, record: ContextRecord) -> None:
        self._core.check_name(record.collection)
        payload = _context_payload(record)
        size = estimate_point_bytes(1, payload)
        if size > self._core.max_request_bytes:
            raise InvalidInput(
                f"context {record.collection!r} v{record.version} needs about {size} bytes, "
                f"over the {self._core.max_request_bytes}-byte request limit"
            )
        point = models.PointStruct(
            id=context_point_id(record.collection, record.version),
            vector=META_DUMMY_VECTOR,
            payload=payload,
        )
        with self._core.meta_errors(f"saving context {record.collection!r} v{record.version}"):
            self._core.client.upsert(self._core.meta_collection, points=[point], wait=True)

    def load(self, collection: str, version: int | None) -> ContextRecord | None:
        if version is None:
            ready = self.versions(collection, ready_only=True)
            if not ready:
                return None
            version = max(ready)
        with self._core.meta_errors(f"loading context {collection!r} v{version}"):
            records = self._core.client.retrieve(
                self._core.meta_collection,
                ids=[context_point_id(collection, version)],
                with_payload=True,
                with_vectors=False,
            )
        if not records or not records[0].payload:
            return None
        return _context_from_payload(records[0].payload)

    def next_version(self, collection: str) -> int:
        versions = set(self.versions(collection, ready_only=False))
        for physical in self._collections.physical_collections(collection):
            parsed = parse_physical(physical)
            if parsed is not None:
                versions.add(parsed[1])
        return max(versions, default=0) + 1

    def versions(self, collection: str, *, ready_only: bool, missing_ok: bool = False) -> list[int]:
        """Versions of the contexts of ``collection`` (only "ready" ones with ``ready_only``).

        ``missing_ok``: no meta collection means no contexts, instead of a hint to migrate.
        """
        meta = self._core.meta_collection
        if missing_ok and not self._core.exists(meta):
            return []
        versions: list[int] = []
        offset: models.ExtendedPointId | None = None
        while True:
            with self._core.meta_errors(f"listing the contexts of {collection!r}"):
                records, offset = self._core.client.scroll(
                    meta,
                    scroll_filter=_context_filter(collection, ready_only=ready_only),
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    with_payload=["version"],  # never page through the embeddings themselves
                    with_vectors=False,
                )
            versions.extend(int(r.payload["version"]) for r in records if r.payload)
            if offset is None:
                return versions

    def delete(self, collection: str, version: int) -> None:
        """Delete context ``version`` of ``collection`` (nothing when absent)."""
        with self._core.meta_errors(f"deleting context {collection!r} v{version}"):
            self._core.client.delete(
                self._core.meta_collection,
                points_selector=models.PointIdsList(points=[context_point_id(collection, version)]),
                wait=True,
            )

    # ---- the rebuild marker -------------------------------------------------------------------
    def save_marker(self, marker: RebuildMarker) -> None:
        point = models.PointStruct(
            id=rebuild_point_id(marker.collection),
            vector=META_DUMMY_VECTOR,
            payload={
                "kind": "rebuild",
                "collection": marker.collection,
                "job_id": marker.job_id,
                "from_version": marker.from_version,
                "target_version": marker.target_version,
                "trigger": marker.trigger,
                "started_at": marker.started_at,
                "seed": marker.seed,
                "source": marker.source,
            },
        )
        with self._core.meta_errors(f"marking a rebuild of {marker.collection!r}"):
            self._core.client.upsert(self._core.meta_collection, points=[point], wait=True)

    def load_marker(self, collection: str) -> RebuildMarker | None:
        if not self._core.exists(self._core.meta_collection):
            return None
        with self._core.meta_errors(f"reading the rebuild marker of {collection!r}"):
            records = self._core.client.retrieve(
                self._core.meta_collection,
                ids=[rebuild_point_id(collection)],
                with_payload=True,
                with_vectors=False,
            )
        if not records or not records[0].payload:
            return None
        p = records[0].payload
        return RebuildMarker(
            collection=str(p["collection"]),
            job_id=str(p["job_id"]),
            from_version=int(p["from_version"]),
            target_version=int(p["target_version"]),
            trigger=str(p.get("trigger", "")),
            started_at=float(p.get("started_at", 0.0)),
            seed=int(p.get("seed", 0)),
            source=str(p.get("source", "rebuild")),
        )

    def marked_collections(self) -> list[str]:
        """The collections with a rebuild marker."""
        meta = self._core.meta_collection
        if not self._core.exists(meta):
            return []
        kind = models.FieldCondition(key="kind", match=models.MatchValue(value="rebuild"))
        found: list[str] = []
        offset: models.ExtendedPointId | None = None
        while True:
            with self._core.meta_errors("listing rebuild markers"):
                records, offset = self._core.client.scroll(
                    meta,
                    scroll_filter=models.Filter(must=[kind]),
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    with_payload=["collection"],
                    with_vectors=False,
                )
            found.extend(str(r.payload["collection"]) for r in records if r.payload)
            if offset is None:
                return sorted(found)

    def clear_marker(self, collection: str) -> None:
        with self._core.meta_errors(f"clearing the rebuild marker of {collection!r}"):
            self._core.client.delete(
                self._core.meta_collection,
                points_selector=models.PointIdsList(points=[rebuild_point_id(collection)]),
                wait=True,
            )

    def delete_all(self, collection: str) -> None:
        """Delete every context of ``collection``, whatever its state."""
        with self._core.meta_errors(f"deleting the contexts of {collection!r}"):
            self._core.client.delete(
                self._core.meta_collection,
                points_selector=models.FilterSelector(filter=_context_filter(collection)),
                wait=True,
            )


def _context_filter(collection: str, *, ready_only: bool = False) -> models.Filter:
    must: list[models.Condition] = [
        models.FieldCondition(key="kind", match=models.MatchValue(value="context")),
        models.FieldCondition(key="collection", match=models.MatchValue(value=collection)),
    ]
    if ready_only:
        must.append(models.FieldCondition(key="state", match=models.MatchValue(value="ready")))
    return models.Filter(must=must)


def _context_payload(record: ContextRecord) -> dict[str, Any]:
    """The meta payload of ``record``; InvalidInput listing every problem of it."""
    problems: list[str] = []
    version = record.version
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        problems.append(f"version must be an int >= 1, got {version!r}")
    embeddings = np.asarray(record.dataset_embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] < 1 or embeddings.shape[1] < 1:
        problems.append(
            f"dataset_embeddings must be a non-empty (N, D) array, got {embeddings.shape}"
        )
    elif not np.issubdtype(embeddings.dtype, np.floating):
        problems.append(f"dataset_embeddings must be floating point, got {embeddings.dtype}")
    elif not np.isfinite(embeddings).all():
        problems.append("dataset_embeddings contain NaN or infinity")
    if record.source not in _CONTEXT_SOURCES:
        problems.append(f"source must be one of {_CONTEXT_SOURCES}, got {record.source!r}")
    if not isinstance(record.state, str) or not record.state:
        problems.append(f"state must be a non-empty string, got {record.state!r}")
    if not all(isinstance(i, str) for i in record.sampled_ids):
        problems.append("sampled_ids must all be strings")
    if problems:
        raise InvalidInput(problems, field="context")
    raw = np.ascontiguousarray(embeddings, dtype="<f4")  # stored little-endian float32
    return {
        "kind": "context",
        "collection": record.collection,
        "version": version,
        "state": record.state,
        "source": ContextSource(record.source).value,
        "model_id": record.model_id,
        "created_at": float(record.created_at),
        "sampled_ids": list(record.sampled_ids),
        "points_at_build": int(record.points_at_build),
        "fingerprint": record.fingerprint,
        "trigger": record.trigger,
        "sampled_chunks": int(record.sampled_chunks),
        "dataset_embeddings": {
            "dtype": "float32",
            "shape": list(raw.shape),
            "base64": base64.b64encode(raw.tobytes()).decode("ascii"),
        },
    }


def _context_from_payload(payload: Mapping[str, Any]) -> ContextRecord:
    stored = payload["dataset_embeddings"]
    if stored.get("dtype") != "float32":
        raise CdeqError(f"context has dataset embeddings of unknown dtype {stored.get('dtype')!r}")
    shape = tuple(int(n) for n in stored["shape"])
    raw = base64.b64decode(stored["base64"])
    # (N, D); astype copies, so the array is writable and native-endian
    embeddings = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    try:
        source = ContextSource(payload["source"])
    except ValueError:
        raise CdeqError(f"context has unknown source {payload['source']!r}") from None
    return ContextRecord(
        collection=str(payload["collection"]),
        version=int(payload["version"]),
        dataset_embeddings=embeddings,
        sampled_ids=[str(i) for i in payload["sampled_ids"]],
        model_id=str(payload["model_id"]),
        created_at=float(payload["created_at"]),
        state=str(payload["state"]),
        source=source,
        points_at_build=int(payload.get("points_at_build", 0)),
        fingerprint=str(payload.get("fingerprint", "")),
        trigger=str(payload.get("trigger", "")),
        sampled_chunks=int(payload.get("sampled_chunks", 0)),
    )
