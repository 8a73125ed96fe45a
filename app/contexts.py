"""Collection contexts: built once (stage 1 under a lock), stored versioned in Qdrant, cached.

A collection's first ingest builds its context from documents that job brings; with too few
distinct documents the generic context is used instead (the authors' random documents:
docs/model.md, "Where the corpus comes from"). Workers and queries load a context once and
cache it by version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.config import IngestSettings
from app.errors import CdeqError, ContextNotReady, InvalidInput, NotFound
from app.jobs import Corpus
from app.locks import LockFactory
from app.model import CdeEmbedder, sample_context
from app.model.generic import generic_texts
from app.names import parse_physical
from app.store import ContextRecord, ContextSource, QdrantStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """One collection's dataset embeddings at one version, and where its vectors live."""

    collection: str
    version: int
    dataset_embeddings: np.ndarray  # (context_size, D) float32, raw stage-1 output
    physical: str
    source: ContextSource


class Contexts:
    def __init__(
        self,
        store: QdrantStore,
        embedder: Callable[[], CdeEmbedder],
        lock: LockFactory,
        settings: IngestSettings,
    ) -> None:
        self.store = store
        self._embedder = embedder
        self._lock = lock
        self.settings = settings
        self._cache: dict[str, Context] = {}
        self._generic: np.ndarray | None = None
        self.builds = 0  # stage-1 runs by this process (for tests and metrics)

    # ---- reading ------------------------------------------------------------------------
    def current(self, collection: str) -> Context:
        """The collection's live context (cached by version); NotFound when it has none."""
        physical = self.store.resolve(collection)
        if physical is None:
            raise NotFound(
                f"collection {collection!r} does not exist (ingest documents into it first)"
            )
        parsed = parse_physical(physical)
        if parsed is None:
            raise CdeqError(
                f"collection {collection!r} points at {physical!r}, which is not a cdeq collection"
            )
        version = parsed[1]
        cached = self._cache.get(collection)
        if cached is not None and cached.version == version:
            return cached
        record = self.store.load_context(collection, version)
        if record is None:
            raise ContextNotReady(f"context {version} of {collection!r} is not stored yet")
        context = Context(collection, version, record.dataset_embeddings, physical, record.source)
        self._cache[collection] = context
        return context

    def generic(self) -> np.ndarray:
        """Dataset embeddings of the generic context (no collection), computed once."""
        if self._generic is None:
            embedder = self._embedder()
            texts = self.generic_texts(embedder)
            self._generic = embedder.embed_context(texts, seed=self.settings.context_seed)
            self.builds += 1
        return self._generic

    def generic_texts(self, embedder: CdeEmbedder) -> list[str]:
        """The model folder's `random_strings.txt` when it ships one, else built-in texts."""
        folder = embedder.folder
        path = Path(folder) / "random_strings.txt" if folder is not None else None
        if path is not None and path.is_file():
            lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if len(set(lines)) >= 2:
                return lines
        return generic_texts(embedder.context_size, seed=self.settings.context_seed)

    # ---- building -----------------------------------------------------------------------
    def ensure(self, collection: str, corpus: Callable[[], Corpus]) -> Context:
        """The collection's context, building it from `corpus()` if it has none yet."""
        try:
            return self.current(collection)
        except NotFound:
            pass
        with self._lock(collection):
            try:  # another worker may have built it while we waited
                return self.current(collection)
            except NotFound:
                return self._build(collection, corpus(), source=ContextSource.CORPUS)

    def create_collection(
        self, collection: str, context_texts: Sequence[str] | None = None
    ) -> Context:
        """Create an empty collection whose context comes from `context_texts` (or the generic
        context when None)."""
        if self.store.collection_exists(collection):
            raise InvalidInput(f"collection {collection!r} already exists", field="collection")
        if context_texts is not None and (
            isinstance(context_texts, str)
            or not all(isinstance(t, str) and t.strip() for t in context_texts)
        ):
            raise InvalidInput(
                "context_texts must be a list of non-empty strings", field="context_texts"
            )
        with self._lock(collection):
            if self.store.collection_exists(collection):
                raise InvalidInput(f"collection {collection!r} already exists", field="collection")
            corpus = [{"id": f"context:{i}", "text": t} for i, t in enumerate(context_texts or [])]
            return self._build(
                collection,
                corpus,
                source=ContextSource.EXPLICIT
                if context_texts is not None
                else ContextSource.GENERIC,
            )

    def _build(self, collection: str, corpus: Corpus, *, source: ContextSource) -> Context:
        embedder = self._embedder()
        seed = self.settings.context_seed
        distinct = {item["text"] for item in corpus}
        if len(distinct) < self.settings.min_context_documents:
            if source == ContextSource.EXPLICIT:
                raise InvalidInput(
                    f"context_texts: {len(distinct)} distinct texts, fewer than the minimum of "
                    f"{self.settings.min_context_documents}",
                    field="context_texts",
                )
            log.info(
                "collection %r: %d distinct documents (< %d), using the generic context",
                collection,
                len(distinct),
                self.settings.min_context_documents,
            )
            chosen = []
            source = ContextSource.GENERIC
        else:
            chosen = sample_context(list(corpus), embedder.context_size, seed)
        started = time.monotonic()
        if (
            source == ContextSource.GENERIC
        ):  # one stage-1 pass per process serves every generic collection
            dataset = self.generic()
        else:
            dataset = embedder.embed_context(
                [c["text"] for c in chosen],
                seed=seed,
                warn_below_distinct=self.settings.min_context_documents,
            )
            self.builds += 1
        version = self.store.next_context_version(collection)
        physical = self.store.ensure_physical(collection, version)
        self.store.save_context(
            ContextRecord(
                collection=collection,
                version=version,
                dataset_embeddings=dataset,
                sampled_ids=[c["id"] for c in chosen if c["id"]],
                model_id=embedder.model_id,
                created_at=time.time(),
                state="ready",
                source=source,
            )
        )
        self.store.set_alias(collection, physical)
        log.info(
            "built context %d of %r from %d %s texts in %.1fs",
            version,
            collection,
            len(chosen) or embedder.context_size,
            source,
            time.monotonic() - started,
        )
        context = Context(collection, version, dataset, physical, source)
        self._cache[collection] = context
        return context
