"""Query use cases: search a collection with its own context, delete and list documents."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app.names import check_collection_name
from app.errors import InvalidInput
from app.store import CollectionInfo, Hit

if TYPE_CHECKING:
    from app.service import Cdeq

MAX_TOP_K = 1000


def _service(service: Cdeq | None) -> Cdeq:
    from app.service import default_service

    return service or default_service()


def search(
    collection: str,
    text: str,
    top_k: int = 10,
    filter: dict[str, Any] | None = None,
    *,
    service: Cdeq | None = None,
) -> list[Hit]:
    """The `top_k` documents of `collection` most similar to the query `text`.

    The query is embedded as `search_query: text` against the collection's stored context
    (the same one its documents were embedded with) and ranked by dot product (= cosine)."""
    check_collection_name(collection)
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("text: must be a non-empty string", field="text")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidInput(f"top_k: must be an integer from 1 to {MAX_TOP_K}, got {top_k!r}", field="top_k")
    svc = _service(service)
    context = svc.contexts.current(collection)
    vector = svc.embedder.embed_queries([text], context.dataset_embeddings).vectors[0]
    return svc.store.search(collection, vector, top_k=top_k, filter=filter)


def delete_documents(collection: str, ids: Sequence[str], *, service: Cdeq | None = None) -> int:
    """Delete documents by id; returns how many existed."""
    check_collection_name(collection)
    if isinstance(ids, str) or not all(isinstance(i, str | int) and not isinstance(i, bool) for i in ids):
        raise InvalidInput("ids: must be a list of document ids (strings)", field="ids")
    return _service(service).store.delete_documents(collection, [str(i) for i in ids])


def list_collections(*, service: Cdeq | None = None) -> list[CollectionInfo]:
    return _service(service).store.list_collections()


def create_collection(
    name: str, context_texts: Sequence[str] | None = None, *, service: Cdeq | None = None
) -> int:
    """Create `name` with an explicit context corpus (or the generic context); returns the
    context version."""
    check_collection_name(name, "name")
    return _service(service).contexts.create_collection(name, context_texts).version
