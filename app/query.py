"""Query use cases: search a collection with its own context, delete and list documents."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.errors import InvalidInput
from app.model import valid_unicode
from app.names import check_collection_name
from app.service import Cdeq
from app.sparse import query_sparse
from app.store import CollectionInfo, Hit, Ranking

MAX_TOP_K = 1000
SEARCH_MODES = ("dense", "sparse", "hybrid")


def search(
    collection: str,
    text: str,
    top_k: int = 10,
    filter: dict[str, Any] | None = None,
    *,
    mode: str | None = None,
    group: bool = True,
    service: Cdeq,
) -> list[Hit]:
    """The `top_k` documents of `collection` that best match the query `text`.

    `mode` (None: CDEQ_SEARCH__MODE): "dense" embeds the query as `search_query: text` against
    the collection's stored context (the one its documents were embedded with) and ranks by
    dot product (= cosine); "sparse" ranks by BM25 over the model's tokenizer terms; "hybrid"
    fuses both lists in Qdrant (CDEQ_SEARCH__FUSION). Sparse and hybrid need a collection
    with sparse vectors (Conflict otherwise: a rebuild adds them).
    `group` (default): documents ranked by their best chunk, each hit naming that chunk;
    `group=False`: the `top_k` best chunks, several of one document possibly."""
    settings = service.settings.search
    mode = settings.mode if mode is None else mode
    if mode not in SEARCH_MODES:
        raise InvalidInput(f"mode: must be one of {list(SEARCH_MODES)}, got {mode!r}", field="mode")
    check_collection_name(collection)
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("text: must be a non-empty string", field="text")
    if not valid_unicode(text):
        raise InvalidInput("text: not valid Unicode (lone surrogate)", field="text")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidInput(
            f"top_k: must be an integer from 1 to {MAX_TOP_K}, got {top_k!r}", field="top_k"
        )
    if not isinstance(group, bool):
        raise InvalidInput(f"group: must be true or false, got {group!r}", field="group")
    # Resolve the alias once: embed with that version's context and search that version's
    # physical collection by name, so a swap in between cannot mix two contexts.
    context = service.contexts.current(collection)
    ranking = Ranking(
        mode=mode,  # type: ignore[arg-type]
        fusion=settings.fusion,
        rrf_k=settings.rrf_k,
        dense_prefetch=settings.dense_prefetch,
        sparse_prefetch=settings.sparse_prefetch,
    )
    if mode != "dense" and not service.store.has_sparse(context.physical):
        # Refused before the model runs; the store's own check words it the same way.
        return service.store.search(
            collection, None, top_k=top_k, filter=filter, physical=context.physical, ranking=ranking
        )
    vector = None
    if mode != "sparse":
        vector = service.embedder.embed_queries([text], context.dataset_embeddings).vectors[0]
    sparse = query_sparse(service, context.physical, text) if mode != "dense" else None
    return service.store.search(
        collection,
        vector,
        top_k=top_k,
        filter=filter,
        physical=context.physical,
        group=group,
        sparse=sparse,
        ranking=ranking,
    )


def delete_documents(collection: str, ids: Sequence[str], *, service: Cdeq) -> int:
    """Delete documents by id; returns how many existed."""
    check_collection_name(collection)
    if isinstance(ids, str) or not all(
        isinstance(i, str | int) and not isinstance(i, bool) for i in ids
    ):
        raise InvalidInput("ids: must be a list of document ids (strings)", field="ids")
    return service.store.delete_documents(collection, [str(i) for i in ids])


def list_collections(*, service: Cdeq) -> list[CollectionInfo]:
    return service.store.list_collections()


def create_collection(
    name: str, context_texts: Sequence[str] | None = None, *, service: Cdeq
) -> int:
    """Create `name` with an explicit context corpus (or the generic context); returns the
    context version."""
    check_collection_name(name, "name")
    return service.contexts.create_collection(name, context_texts).version
