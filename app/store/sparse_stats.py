"""The BM25 statistics of each physical collection (documents and terms written so far), kept as
points of the meta collection; BM25's length normalisation reads the average from them."""

from __future__ import annotations

import uuid

from qdrant_client import models

from app.names import parse_physical
from app.store.base import StoreCore
from app.store.records import POINT_NAMESPACE, Bm25Stats
from app.store.schema import META_DUMMY_VECTOR


def stats_point_id(physical: str) -> str:
    """Id of the meta point that holds the BM25 statistics of ``physical``."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"bm25\x00{physical}"))


class SparseStats:
    """Reading and writing the BM25 statistics of physical collections."""

    def __init__(self, core: StoreCore) -> None:
        self._core = core

    def load(self, physical: str) -> Bm25Stats:
        """The statistics of ``physical``; zero counts when none were written yet."""
        if not self._core.exists(self._core.meta_collection):
            return Bm25Stats()
        with self._core.meta_errors(f"reading the BM25 statistics of {physical!r}"):
            records = self._core.client.retrieve(
                self._core.meta_collection,
                ids=[stats_point_id(physical)],
                with_payload=True,
                with_vectors=False,
            )
        if not records or not records[0].payload:
            return Bm25Stats()
        p = records[0].payload
        return Bm25Stats(int(p["documents"]), int(p["terms"]), str(p.get("signature", "")))

    def save(self, physical: str, stats: Bm25Stats) -> None:
        parsed = parse_physical(physical)
        point = models.PointStruct(
            id=stats_point_id(physical),
            vector=META_DUMMY_VECTOR,
            payload={
                "kind": "bm25",
                "collection": parsed[0] if parsed else physical,
                "physical": physical,
                "documents": stats.documents,
                "terms": stats.terms,
                "signature": stats.signature,
            },
        )
        with self._core.meta_errors(f"saving the BM25 statistics of {physical!r}"):
            self._core.client.upsert(self._core.meta_collection, points=[point], wait=True)

    def delete(self, physicals: list[str]) -> None:
        if not physicals or not self._core.exists(self._core.meta_collection):
            return
        with self._core.meta_errors("deleting BM25 statistics"):
            self._core.client.delete(
                self._core.meta_collection,
                points_selector=models.PointIdsList(points=[stats_point_id(p) for p in physicals]),
                wait=True,
            )
