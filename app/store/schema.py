"""The meta collection's shape and the schema version recorded in it.

The meta collection holds contexts (`app.store.contexts`) and one schema point with the number
of the last migration applied; it needs some vector config, so its points carry a dummy one.
"""

from __future__ import annotations

import time
import uuid

from qdrant_client import models

from app.errors import CdeqError, InvalidInput
from app.store.base import MIGRATE_HINT, StoreCore
from app.store.client import translated_errors
from app.store.records import POINT_NAMESPACE

META_VECTOR = "unused"
META_DUMMY_VECTOR: models.VectorStruct = {META_VECTOR: [1.0]}
_SCHEMA_POINT_ID = str(uuid.uuid5(POINT_NAMESPACE, "schema"))


class Schema:
    """Creating the meta collection, and reading and recording the schema version."""

    def __init__(self, core: StoreCore) -> None:
        self._core = core

    def version(self) -> int:
        meta = self._core.meta_collection
        if not self._core.exists(meta):
            return 0
        with translated_errors("reading the schema version", collection=meta):
            records = self._core.client.retrieve(
                meta, ids=[_SCHEMA_POINT_ID], with_payload=True, with_vectors=False
            )
        if not records or not records[0].payload:
            return 0
        return int(records[0].payload["version"])

    def set_version(self, version: int) -> None:
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise InvalidInput(f"schema version must be an int >= 0, got {version!r}")
        point = models.PointStruct(
            id=_SCHEMA_POINT_ID,
            vector=META_DUMMY_VECTOR,
            payload={"kind": "schema", "version": version, "updated_at": time.time()},
        )
        with self._core.meta_errors("recording the schema version"):
            self._core.client.upsert(self._core.meta_collection, points=[point], wait=True)

    def require(self, minimum: int) -> None:
        current = self.version()
        if current < minimum:
            raise CdeqError(
                f"Qdrant schema is at version {current} but cdeq needs at least {minimum}: "
                f"{MIGRATE_HINT} first"
            )

    def ensure_meta_collection(self) -> None:
        meta = self._core.meta_collection
        self._core.create_if_absent(
            meta, {META_VECTOR: models.VectorParams(size=1, distance=models.Distance.DOT)}
        )
        self._core.index(meta, "kind", models.PayloadSchemaType.KEYWORD)
        self._core.index(meta, "collection", models.PayloadSchemaType.KEYWORD)
        self._core.index(meta, "version", models.PayloadSchemaType.INTEGER)
        # Servers in strict mode refuse filters on unindexed fields; contexts filter on state.
        self._core.index(meta, "state", models.PayloadSchemaType.KEYWORD)
