"""QdrantStore: documents, aliases and contexts of cdeq in Qdrant (server or local mode).

A user collection NAME is an alias onto the physical collection ``NAME__c<version>`` built with
context ``version``; contexts and the schema version live as points in the meta collection.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, cast

import numpy as np
from qdrant_client import QdrantClient, models

from app import names
from app.config import QdrantSettings
from app.errors import CdeqError, InvalidInput, NotFound
from app.names import parse_physical
from app.store.batches import DEFAULT_MAX_REQUEST_BYTES, estimate_point_bytes, plan_batches
from app.store.client import open_client, translated_errors
from app.store.filters import SearchFilter, build_filter
from app.store.records import (
    META_COLLECTION,
    POINT_NAMESPACE,
    CollectionInfo,
    ContextRecord,
    ContextSource,
    Hit,
    PointRecord,
    point_id,
)

USER_PAYLOAD_KEYS = ("document_id", "text", "metadata", "content_hash", "context_version")
META_VECTOR = "unused"  # the meta collection needs some vector config; its points carry a dummy one
_META_DUMMY_VECTOR: models.VectorStruct = {META_VECTOR: [1.0]}
_SCHEMA_POINT_ID = str(uuid.uuid5(POINT_NAMESPACE, "schema"))
_IDS_PER_REQUEST = 1024
_SCROLL_PAGE = 256
_MIGRATE_HINT = "run `cdeq migrate`"
_CONTEXT_SOURCES = tuple(source.value for source in ContextSource)
# Local mode warns that payload indexes are no-ops there; cdeq creates them for servers.
_LOCAL_INDEX_WARNING = "Payload indexes have no effect in the local Qdrant"


def _is_local(client: QdrantClient) -> bool:
    from qdrant_client.local.qdrant_local import QdrantLocal

    return isinstance(getattr(client, "_client", None), QdrantLocal)


class _SerializedClient:
    """A local-mode client whose calls run one at a time.

    qdrant-client's local mode is not thread-safe (a search beside an upsert fails on arrays
    that change size under it), and API requests and in-process workers run in threads. A
    server needs no such guard."""

    def __init__(self, client: QdrantClient) -> None:
        self._inner = client
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return locked


def _serialized(client: QdrantClient) -> QdrantClient:
    return cast(QdrantClient, _SerializedClient(client))


def context_point_id(collection: str, version: int) -> str:
    """Id of the meta point that holds context ``version`` of ``collection``."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"context\x00{collection}\x00{version}"))


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
        if dim < 1:
            raise InvalidInput(f"dim must be at least 1, got {dim}")
        if upsert_batch_size < 1:
            raise InvalidInput(f"upsert_batch_size must be at least 1, got {upsert_batch_size}")
        self._client = _serialized(client) if _is_local(client) else client
        self.dim = dim
        self.store_text = store_text
        self.upsert_batch_size = upsert_batch_size
        self.max_request_bytes = max_request_bytes
        # A separate meta collection lets tests share one server without touching real data.
        self.meta_collection = meta_collection

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
        return self._client

    def close(self) -> None:
        """Release the client (and, in local mode, the folder lock)."""
        with translated_errors("closing the client"):
            self._client.close()

    # ---- schema -------------------------------------------------------------------------------

    def schema_version(self) -> int:
        """The migration number recorded in Qdrant; 0 when never migrated."""
        if not self._exists(self.meta_collection):
            return 0
        with translated_errors("reading the schema version", collection=self.meta_collection):
            records = self._client.retrieve(
                self.meta_collection, ids=[_SCHEMA_POINT_ID], with_payload=True, with_vectors=False
            )
        if not records or not records[0].payload:
            return 0
        return int(records[0].payload["version"])

    def set_schema_version(self, version: int) -> None:
        """Record ``version`` as applied (the meta collection must exist: migration 1 makes it)."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise InvalidInput(f"schema version must be an int >= 0, got {version!r}")
        point = models.PointStruct(
            id=_SCHEMA_POINT_ID,
            vector=_META_DUMMY_VECTOR,
            payload={"kind": "schema", "version": version, "updated_at": time.time()},
        )
        with self._meta_errors("recording the schema version"):
            self._client.upsert(self.meta_collection, points=[point], wait=True)

    def require_schema(self, minimum: int) -> None:
        """Refuse to work on a Qdrant that lacks migrations this code relies on."""
        current = self.schema_version()
        if current < minimum:
            raise CdeqError(
                f"Qdrant schema is at version {current} but cdeq needs at least {minimum}: "
                f"{_MIGRATE_HINT} first"
            )

    def ensure_meta_collection(self) -> None:
        """Create the meta collection (tiny dummy vector, payload indexes) if absent; idempotent."""
        self._create_if_absent(
            self.meta_collection,
            {META_VECTOR: models.VectorParams(size=1, distance=models.Distance.DOT)},
        )
        self._index(self.meta_collection, "kind", models.PayloadSchemaType.KEYWORD)
        self._index(self.meta_collection, "collection", models.PayloadSchemaType.KEYWORD)
        self._index(self.meta_collection, "version", models.PayloadSchemaType.INTEGER)
        # Servers in strict mode refuse filters on unindexed fields; contexts filter on state.
        self._index(self.meta_collection, "state", models.PayloadSchemaType.KEYWORD)

    def ensure_point_indexes(self, physical: str) -> None:
        """Payload indexes every physical collection needs for deletes, lookups and filters."""
        self._index(physical, "document_id", models.PayloadSchemaType.KEYWORD)
        self._index(physical, "context_version", models.PayloadSchemaType.INTEGER)

    # ---- collections --------------------------------------------------------------------------

    def physical_name(self, collection: str, version: int) -> str:
        """``NAME__c<version>``, after checking the name and version."""
        self._check_name(collection)
        return names.physical_name(collection, version)

    def physical_collections(self, collection: str | None = None) -> list[str]:
        """Physical collections (of ``collection``, or of every collection), by name then version."""
        with translated_errors("listing collections"):
            names = [c.name for c in self._client.get_collections().collections]
        found: list[tuple[str, int, str]] = []
        for name in names:
            parsed = parse_physical(name)
            if (
                parsed is not None
                and name != self.meta_collection
                and (collection is None or parsed[0] == collection)
            ):
                found.append((parsed[0], parsed[1], name))
        return [name for _, _, name in sorted(found)]

    def ensure_physical(self, collection: str, version: int) -> str:
        """Create ``NAME__c<version>`` (dot product, ``dim``) with its indexes if absent; idempotent."""
        physical = self.physical_name(collection, version)
        self._create_if_absent(
            physical, models.VectorParams(size=self.dim, distance=models.Distance.DOT)
        )
        self.ensure_point_indexes(physical)
        return physical

    def set_alias(self, collection: str, physical: str) -> None:
        """Point ``collection`` at ``physical``: one atomic request, so readers never see a gap."""
        self._check_name(collection)
        parsed = parse_physical(physical)
        if parsed is None or parsed[0] != collection:
            raise InvalidInput(f"{physical!r} is not a physical collection of {collection!r}")
        current = self.resolve(collection)
        if current == physical:
            return
        operations: list[models.AliasOperations] = []
        if current is not None:
            # Servers differ on deleting an absent alias; only delete one that is there.
            operations.append(
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=collection))
            )
        operations.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=physical, alias_name=collection)
            )
        )
        with translated_errors(f"switching alias {collection!r}", collection=physical):
            self._client.update_collection_aliases(change_aliases_operations=operations)

    def resolve(self, collection: str) -> str | None:
        """The physical collection that ``collection`` points at, or None."""
        for alias_name, target in self._aliases():
            if alias_name == collection:
                return target
        return None

    def collection_exists(self, collection: str) -> bool:
        """Whether the user collection (alias) exists."""
        return self.resolve(collection) is not None

    def list_collections(self) -> list[CollectionInfo]:
        """Every user collection with its exact point count, sorted by name."""
        infos: list[CollectionInfo] = []
        for alias_name, target in sorted(self._aliases()):
            if target == self.meta_collection:
                continue
            parsed = parse_physical(target)
            version = parsed[1] if parsed is not None and parsed[0] == alias_name else None
            with translated_errors("counting points", collection=alias_name):
                points = self._client.count(target, exact=True).count
            infos.append(CollectionInfo(alias_name, target, points, version))
        return infos

    def drop_collection(self, collection: str) -> None:
        """Delete the alias, every physical collection and every context of ``collection``.

        Safe to repeat after a partial failure; NotFound only when nothing of it was left.
        """
        self._check_readable_name(collection)
        current = self.resolve(collection)
        physicals = self.physical_collections(collection)
        contexts = self._context_versions(collection, ready_only=False, missing_ok=True)
        if current is None and not physicals and not contexts:
            raise NotFound(f"collection {collection!r} does not exist")
        if current is not None:
            # Alias first: the collection disappears for readers before its data does.
            with translated_errors(f"deleting alias {collection!r}"):
                self._client.update_collection_aliases(
                    change_aliases_operations=[
                        models.DeleteAliasOperation(
                            delete_alias=models.DeleteAlias(alias_name=collection)
                        )
                    ]
                )
        for physical in physicals:
            with translated_errors(f"deleting collection {physical!r}"):
                self._client.delete_collection(physical)
        if contexts:
            with self._meta_errors(f"deleting the contexts of {collection!r}"):
                self._client.delete(
                    self.meta_collection,
                    points_selector=models.FilterSelector(filter=self._context_filter(collection)),
                    wait=True,
                )

    # ---- points -------------------------------------------------------------------------------

    def upsert(self, physical: str, points: Sequence[PointRecord]) -> None:
        """Write ``points`` into ``physical`` (wait=True), split by count and request size.

        Point ids derive from the user collection, so a document keeps its id across context
        versions; a document listed twice is written once, with its last record.
        """
        parsed = parse_physical(physical)
        if parsed is None or physical == self.meta_collection:
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
                sizes.append(estimate_point_bytes(self.dim, payload))
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
            sizes, max_points=self.upsert_batch_size, max_bytes=self.max_request_bytes
        ):
            with translated_errors(f"upserting into {physical!r}", collection=physical):
                self._client.upsert(physical, points=structs[batch.start : batch.stop], wait=True)

    def delete_documents(self, collection: str, document_ids: Sequence[str]) -> int:
        """Delete documents from every physical collection of ``collection``; returns how many
        existed in the live one. A rebuild in progress loses them too, so they cannot come back
        when its alias is switched in."""
        self._check_readable_name(collection)
        live = self.resolve(collection)
        if live is None:
            raise NotFound(f"collection {collection!r} does not exist")
        ids = [point_id(collection, d) for d in dict.fromkeys(document_ids)]
        existing = len(self._retrieve(live, ids, with_payload=False, collection=collection))
        for physical in self.physical_collections(collection):
            for start in range(0, len(ids), _IDS_PER_REQUEST):
                chunk = ids[start : start + _IDS_PER_REQUEST]
                with translated_errors(
                    f"deleting documents from {physical!r}", collection=collection
                ):
                    self._client.delete(
                        physical,
                        points_selector=models.PointIdsList(points=list(chunk)),
                        wait=True,
                    )
        return existing

    def count(self, collection: str) -> int:
        """Exact number of documents in ``collection``."""
        self._check_readable_name(collection)
        with translated_errors(f"counting {collection!r}", collection=collection):
            return self._client.count(collection, exact=True).count

    def search(
        self,
        collection: str,
        vector: Sequence[float] | np.ndarray,
        top_k: int = 10,
        filter: SearchFilter | None = None,
    ) -> list[Hit]:
        """The ``top_k`` documents of ``collection`` with the highest dot product with ``vector``.

        ``filter``: ``{"metadata.lang": "en", "metadata.tag": ["a", "b"]}`` (all must match; a
        list matches any item) or a ``qdrant_client.models.Filter``.
        """
        self._check_readable_name(collection)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InvalidInput(f"top_k must be an int >= 1, got {top_k!r}", field="top_k")
        query = self._vector(vector, "query vector")
        query_filter = build_filter(filter)
        with translated_errors(f"searching {collection!r}", collection=collection):
            response = self._client.query_points(
                collection,
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
        """document id -> user-facing payload, for those of ``document_ids`` that exist."""
        self._check_readable_name(collection)
        ids = [point_id(collection, d) for d in dict.fromkeys(document_ids)]
        if not ids and not self.collection_exists(collection):
            raise NotFound(f"collection {collection!r} does not exist")
        found: dict[str, dict[str, Any]] = {}
        for record in self._retrieve(collection, ids, with_payload=True, collection=collection):
            payload = record.payload or {}
            found[str(payload["document_id"])] = _user_payload(payload)
        return found

    # ---- contexts -----------------------------------------------------------------------------

    def save_context(self, record: ContextRecord) -> None:
        """Store (or overwrite) context ``record.version`` of ``record.collection``, bit-exact."""
        self._check_name(record.collection)
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
        payload = {
            "kind": "context",
            "collection": record.collection,
            "version": version,
            "state": record.state,
            "source": ContextSource(record.source).value,
            "model_id": record.model_id,
            "created_at": float(record.created_at),
            "sampled_ids": list(record.sampled_ids),
            "dataset_embeddings": {
                "dtype": "float32",
                "shape": list(raw.shape),
                "base64": base64.b64encode(raw.tobytes()).decode("ascii"),
            },
        }
        size = estimate_point_bytes(1, payload)
        if size > self.max_request_bytes:
            raise InvalidInput(
                f"context {record.collection!r} v{version} needs about {size} bytes, over the "
                f"{self.max_request_bytes}-byte request limit"
            )
        point = models.PointStruct(
            id=context_point_id(record.collection, version),
            vector=_META_DUMMY_VECTOR,
            payload=payload,
        )
        with self._meta_errors(f"saving context {record.collection!r} v{version}"):
            self._client.upsert(self.meta_collection, points=[point], wait=True)

    def load_context(self, collection: str, version: int | None = None) -> ContextRecord | None:
        """Context ``version`` of ``collection`` (any state), or with ``version=None`` the highest
        version whose state is "ready"; None when there is no such context."""
        if version is None:
            ready = self._context_versions(collection, ready_only=True)
            if not ready:
                return None
            version = max(ready)
        with self._meta_errors(f"loading context {collection!r} v{version}"):
            records = self._client.retrieve(
                self.meta_collection,
                ids=[context_point_id(collection, version)],
                with_payload=True,
                with_vectors=False,
            )
        if not records or not records[0].payload:
            return None
        return _context_from_payload(records[0].payload)

    def next_context_version(self, collection: str) -> int:
        """1 + the highest version among its contexts and physical collections (1 when none).

        Counting physical collections too means a build that crashed before saving its context
        never has its half-filled collection reused by the next build.
        """
        versions = set(self._context_versions(collection, ready_only=False))
        for physical in self.physical_collections(collection):
            parsed = parse_physical(physical)
            if parsed is not None:
                versions.add(parsed[1])
        return max(versions, default=0) + 1

    # ---- internals ----------------------------------------------------------------------------

    def _check_name(self, collection: str) -> None:
        # The names rule, plus this store's meta collection (tests give each run its own).
        names.check_collection_name(collection)
        if collection == self.meta_collection:
            raise InvalidInput(
                f"collection: {collection!r} is reserved (the meta collection "
                f"{self.meta_collection!r} is cdeq's own)",
                field="collection",
            )

    def _check_readable_name(self, collection: str) -> None:
        # Reads go to the alias name directly (one round trip); a name that can never be a user
        # collection must not reach a physical or the meta collection by accident.
        if not names.is_collection_name(collection) or collection == self.meta_collection:
            raise NotFound(f"collection {collection!r} does not exist")

    def _exists(self, name: str) -> bool:
        with translated_errors(f"checking collection {name!r}"):
            return bool(self._client.collection_exists(name))

    def _aliases(self) -> list[tuple[str, str]]:
        with translated_errors("listing aliases"):
            response = self._client.get_aliases()
        return [(a.alias_name, a.collection_name) for a in response.aliases]

    def _create_if_absent(
        self, name: str, vectors: models.VectorParams | dict[str, models.VectorParams]
    ) -> None:
        if not self._exists(name):
            try:
                with translated_errors(f"creating collection {name!r}"):
                    self._client.create_collection(name, vectors_config=vectors)
            except InvalidInput:
                # Another worker may have created it between our check and our request.
                if not self._exists(name):
                    raise
        if isinstance(vectors, models.VectorParams):
            self._check_vectors(name, vectors)

    def _check_vectors(self, name: str, wanted: models.VectorParams) -> None:
        with translated_errors(f"reading collection {name!r}", collection=name):
            info = self._client.get_collection(name)
        have = info.config.params.vectors
        if isinstance(have, models.VectorParams):
            if (have.size, have.distance) == (wanted.size, wanted.distance):
                return
            found = f"{have.size}-dim {have.distance.value} vectors"
        else:
            found = f"vectors {have!r}"
        raise CdeqError(
            f"collection {name!r} holds {found}, but this store writes {wanted.size}-dim "
            f"{wanted.distance.value} vectors: was it made for another model?"
        )

    def _index(self, name: str, field: str, schema: models.PayloadSchemaType) -> None:
        # Creating an index that exists with the same schema is a no-op on the server.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_LOCAL_INDEX_WARNING, category=UserWarning)
            with translated_errors(f"indexing {field!r} of {name!r}", collection=name):
                self._client.create_payload_index(
                    name, field_name=field, field_schema=schema, wait=True
                )

    def _meta_errors(self, action: str) -> AbstractContextManager[None]:
        return _meta_errors(action, self.meta_collection)

    def _context_filter(self, collection: str, *, ready_only: bool = False) -> models.Filter:
        must: list[models.Condition] = [
            models.FieldCondition(key="kind", match=models.MatchValue(value="context")),
            models.FieldCondition(key="collection", match=models.MatchValue(value=collection)),
        ]
        if ready_only:
            must.append(models.FieldCondition(key="state", match=models.MatchValue(value="ready")))
        return models.Filter(must=must)

    def _context_versions(
        self, collection: str, *, ready_only: bool, missing_ok: bool = False
    ) -> list[int]:
        if missing_ok and not self._exists(self.meta_collection):
            return []
        versions: list[int] = []
        offset: models.ExtendedPointId | None = None
        while True:
            with self._meta_errors(f"listing the contexts of {collection!r}"):
                records, offset = self._client.scroll(
                    self.meta_collection,
                    scroll_filter=self._context_filter(collection, ready_only=ready_only),
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    with_payload=["version"],  # never page through the embeddings themselves
                    with_vectors=False,
                )
            versions.extend(int(r.payload["version"]) for r in records if r.payload)
            if offset is None:
                return versions

    def _retrieve(
        self, name: str, ids: list[str], *, with_payload: bool, collection: str
    ) -> list[models.Record]:
        found: list[models.Record] = []
        for start in range(0, len(ids), _IDS_PER_REQUEST):
            with translated_errors(f"reading documents of {collection!r}", collection=collection):
                found.extend(
                    self._client.retrieve(
                        name,
                        ids=ids[start : start + _IDS_PER_REQUEST],
                        with_payload=with_payload,
                        with_vectors=False,
                    )
                )
        return found

    def _vector(self, vector: Sequence[float] | np.ndarray, what: str) -> list[float]:
        try:
            array = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"{what} is not numeric: {exc}") from None
        if array.shape != (self.dim,):
            raise InvalidInput(f"{what} must have shape ({self.dim},), got {array.shape}")
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
        if self.store_text and record.text is not None:
            payload["text"] = record.text
        return payload


@contextmanager
def _meta_errors(action: str, meta_collection: str) -> Iterator[None]:
    """translated_errors for the meta collection: a missing one means migrations never ran."""
    try:
        with translated_errors(action, collection=meta_collection):
            yield
    except NotFound as missing:
        raise CdeqError(
            f"Qdrant has no {meta_collection!r} collection while {action}: {_MIGRATE_HINT}"
        ) from missing


def _user_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {key: payload[key] for key in USER_PAYLOAD_KEYS if key in payload}


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
    )
