"""What the parts of the store share: one client and its settings, name checks, and the few
collection-level requests (exists, create, payload index) every part needs.

`StoreCore` is built once by `QdrantStore`; each part (`Collections`, `Schema`, `Points`,
`Contexts`) holds the same core, so they all talk through one client.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, cast

from qdrant_client import QdrantClient, models

from app import names
from app.errors import CdeqError, InvalidInput, NotFound
from app.store.client import translated_errors

MIGRATE_HINT = "run `cdeq migrate`"
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


@contextmanager
def meta_errors(action: str, meta_collection: str) -> Iterator[None]:
    """translated_errors for the meta collection: a missing one means migrations never ran."""
    try:
        with translated_errors(action, collection=meta_collection):
            yield
    except NotFound as missing:
        raise CdeqError(
            f"Qdrant has no {meta_collection!r} collection while {action}: {MIGRATE_HINT}"
        ) from missing


class StoreCore:
    """The client (serialized in local mode) and the settings every part of the store reads."""

    def __init__(
        self,
        client: QdrantClient,
        *,
        dim: int,
        store_text: bool,
        upsert_batch_size: int,
        max_request_bytes: int,
        meta_collection: str,
    ) -> None:
        if dim < 1:
            raise InvalidInput(f"dim must be at least 1, got {dim}")
        if upsert_batch_size < 1:
            raise InvalidInput(f"upsert_batch_size must be at least 1, got {upsert_batch_size}")
        self.local = _is_local(client)
        self.client = _serialized(client) if self.local else client
        self.dim = dim
        self.store_text = store_text
        self.upsert_batch_size = upsert_batch_size
        self.max_request_bytes = max_request_bytes
        # A separate meta collection lets tests share one server without touching real data.
        self.meta_collection = meta_collection
        # Physical collections known to have the sparse vectors (a collection never loses them).
        self.sparse_known: set[str] = set()

    # ---- names --------------------------------------------------------------------------------

    def check_name(self, collection: str) -> None:
        """InvalidInput unless ``collection`` may be a user collection of this store."""
        # The names rule, plus this store's meta collection (tests give each run its own).
        names.check_collection_name(collection)
        if collection == self.meta_collection:
            raise InvalidInput(
                f"collection: {collection!r} is reserved (the meta collection "
                f"{self.meta_collection!r} is cdeq's own)",
                field="collection",
            )

    def check_readable_name(self, collection: str) -> None:
        """NotFound unless ``collection`` may be a user collection of this store."""
        # Reads go to the alias name directly (one round trip); a name that can never be a user
        # collection must not reach a physical or the meta collection by accident.
        if not names.is_collection_name(collection) or collection == self.meta_collection:
            raise NotFound(f"collection {collection!r} does not exist")

    # ---- collections --------------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        """Whether the collection or alias ``name`` exists."""
        with translated_errors(f"checking collection {name!r}"):
            return bool(self.client.collection_exists(name))

    def create_if_absent(
        self,
        name: str,
        vectors: models.VectorParams | dict[str, models.VectorParams],
        sparse: dict[str, models.SparseVectorParams] | None = None,
    ) -> None:
        """Create ``name`` unless it exists; an existing single-vector one must match ``vectors``
        (an existing one without ``sparse`` vectors is left as it is: searches tell)."""
        if not self.exists(name):
            try:
                with translated_errors(f"creating collection {name!r}"):
                    self.client.create_collection(
                        name, vectors_config=vectors, sparse_vectors_config=sparse
                    )
            except InvalidInput:
                # Another worker may have created it between our check and our request.
                if not self.exists(name):
                    raise
        if isinstance(vectors, models.VectorParams):
            self._check_vectors(name, vectors)

    def _check_vectors(self, name: str, wanted: models.VectorParams) -> None:
        with translated_errors(f"reading collection {name!r}", collection=name):
            info = self.client.get_collection(name)
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

    def index(self, name: str, field: str, schema: models.PayloadSchemaType) -> None:
        """Create the payload index ``field`` of ``name``; idempotent."""
        # Creating an index that exists with the same schema is a no-op on the server.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_LOCAL_INDEX_WARNING, category=UserWarning)
            with translated_errors(f"indexing {field!r} of {name!r}", collection=name):
                self.client.create_payload_index(
                    name, field_name=field, field_schema=schema, wait=True
                )

    def meta_errors(self, action: str) -> AbstractContextManager[None]:
        """`meta_errors` for this store's meta collection."""
        return meta_errors(action, self.meta_collection)
