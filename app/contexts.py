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
from app.errors import CdeqError, ContextNotReady, InvalidInput, ModelMismatch, NotFound
from app.jobs import Corpus
from app.locks import LockFactory
from app.model import CdeEmbedder, sample_context
from app.model.generic import generic_texts
from app.names import parse_physical
from app.store import ContextRecord, ContextSource, QdrantStore

log = logging.getLogger(__name__)


def model_fingerprint(embedder: CdeEmbedder) -> str:
    """The served model's weights fingerprint (`CdeEmbedder.fingerprint`)."""
    return embedder.fingerprint


@dataclass(frozen=True)
class Context:
    """One collection's dataset embeddings at one version, and where its vectors live."""

    collection: str
    version: int
    dataset_embeddings: np.ndarray  # (context_size, D) float32, raw stage-1 output
    physical: str
    source: ContextSource
    model_id: str = ""
    fingerprint: str = ""  # "" for contexts saved before fingerprints were recorded


def _context(record: ContextRecord, physical: str) -> Context:
    return Context(
        record.collection,
        record.version,
        record.dataset_embeddings,
        physical,
        record.source,
        record.model_id,
        record.fingerprint,
    )


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
        self._versions: dict[tuple[str, int], Context] = {}
        self._generic: np.ndarray | None = None
        self.builds = 0  # stage-1 runs by this process (for tests and metrics)
        self.rebuilds_started: dict[str, int] = {}  # by trigger, in-process mode (metrics)

    # ---- reading ------------------------------------------------------------------------
    def current(self, collection: str) -> Context:
        """The collection's live context (cached by version); NotFound when it has none, and
        ModelMismatch when the collection was embedded with another model than this one."""
        context = self._live(collection)
        self.check_model(context)
        return context

    def check_model(self, context: Context) -> None:
        """ModelMismatch unless this process's model is the one `context` was built with."""
        if not context.fingerprint:
            return  # saved before fingerprints were recorded: nothing to compare
        embedder = self._embedder()
        mine = model_fingerprint(embedder)
        if mine != context.fingerprint:
            raise ModelMismatch(
                f"collection {context.collection!r} (context v{context.version}) was embedded "
                f"with model {context.model_id!r} (fingerprint {context.fingerprint[:12]}), but "
                f"this process serves {embedder.model_id!r} (fingerprint {mine[:12]}): use that "
                "model, or move the collection to this one with `cdeq context rebuild`"
            )

    def writer_fingerprint(self, context: Context) -> str:
        """The fingerprint to stamp on points this process writes into `context`'s version;
        ModelMismatch (nothing written) when this process's model is not the context's."""
        self.check_model(context)
        return model_fingerprint(self._embedder())

    def _live(self, collection: str) -> Context:
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
        context = _context(record, physical)
        self._cache[collection] = context
        return context

    def at_version(self, collection: str, version: int) -> Context:
        """Context ``version`` of ``collection`` whatever its state (a rebuild's target
        included); ContextNotReady when it is not stored (yet)."""
        key = (collection, version)
        cached = self._versions.get(key)
        if cached is not None:
            return cached
        record = self.store.load_context(collection, version)
        if record is None:
            raise ContextNotReady(f"context {version} of {collection!r} is not stored yet")
        context = _context(record, self.store.physical_name(collection, version))
        if record.state == "ready":  # a building context may still be replaced by a re-run
            self._versions[key] = context
        return context

    def forget(self, collection: str) -> None:
        """Drop cached contexts of ``collection`` (after a swap, rollback, prune or drop)."""
        self._cache.pop(collection, None)
        for key in [k for k in self._versions if k[0] == collection]:
            del self._versions[key]

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
    def ensure(
        self,
        collection: str,
        corpus: Callable[[], Corpus],
        population: Callable[[], int] | None = None,
    ) -> Context:
        """The collection's context, building it from `corpus()` if it has none yet.

        `population()`: how many documents the corpus was sampled from (the job's size),
        recorded as the context's `points_at_build`."""
        try:
            return self.current(collection)
        except NotFound:
            pass
        with self._lock(collection):
            try:  # another worker may have built it while we waited
                return self.current(collection)
            except NotFound:
                texts = corpus()
                size = population() if population is not None else len(texts)
                return self._build(
                    collection,
                    texts,
                    source=ContextSource.CORPUS,
                    points_at_build=max(size, len(texts)),
                    trigger="first-ingest",
                )

    def fingerprint(self) -> str:
        """The served model's weights fingerprint."""
        return model_fingerprint(self._embedder())

    def build_version(
        self,
        collection: str,
        version: int,
        corpus: Corpus,
        *,
        source: ContextSource,
        trigger: str,
        points_at_build: int,
        seed: int,
    ) -> Context:
        """Stage 1 on `corpus` into context `version` of `collection`, state "building", with
        its (empty) physical collection; the alias is not touched. Callers hold the lock."""
        embedder = self._embedder()
        distinct = {item["text"] for item in corpus}
        if len(distinct) < 2:
            raise InvalidInput(
                f"context: {len(distinct)} distinct texts; a context needs varied texts",
                field="context_texts",
            )
        chosen = sample_context(list(corpus), embedder.context_size, seed)
        started = time.monotonic()
        dataset = embedder.embed_context([c["text"] for c in chosen], seed=seed)
        self.builds += 1
        physical = self._store_version(
            collection, version, dataset, chosen, "building", source, trigger, points_at_build
        )
        log.info(
            "built context %d of %r (%s) from %d texts in %.1fs",
            version,
            collection,
            trigger,
            len(chosen),
            time.monotonic() - started,
        )
        self._versions.pop((collection, version), None)
        return Context(
            collection,
            version,
            dataset,
            physical,
            source,
            embedder.model_id,
            model_fingerprint(embedder),
        )

    def _store_version(
        self,
        collection: str,
        version: int,
        dataset: np.ndarray,
        chosen: Corpus,
        state: str,
        source: ContextSource,
        trigger: str,
        points_at_build: int,
    ) -> str:
        """Save context `version` (its dataset embeddings and provenance) and create its
        physical collection; returns the physical collection's name."""
        embedder = self._embedder()
        physical = self.store.ensure_physical(collection, version)
        self.store.save_context(
            ContextRecord(
                collection=collection,
                version=version,
                dataset_embeddings=dataset,
                sampled_ids=[c["id"] for c in chosen if c["id"]],
                model_id=embedder.model_id,
                created_at=time.time(),
                state=state,
                source=source,
                points_at_build=points_at_build,
                fingerprint=model_fingerprint(embedder),
                trigger=trigger,
                sampled_chunks=len({(c["id"], c["text"]) for c in chosen if c["id"]}),
            )
        )
        return physical

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
                trigger="create",
            )

    def _build(
        self,
        collection: str,
        corpus: Corpus,
        *,
        source: ContextSource,
        points_at_build: int = 0,
        trigger: str = "",
    ) -> Context:
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
            points_at_build = 0
        else:
            chosen = sample_context(list(corpus), embedder.context_size, seed)
        started = time.monotonic()
        if source == ContextSource.GENERIC:  # one stage-1 pass per process serves them all
            dataset = self.generic()
        else:
            dataset = embedder.embed_context(
                [c["text"] for c in chosen],
                seed=seed,
                warn_below_distinct=self.settings.min_context_documents,
            )
            self.builds += 1
        version = self.store.next_context_version(collection)
        physical = self._store_version(
            collection, version, dataset, chosen, "ready", source, trigger, points_at_build
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
        context = Context(
            collection,
            version,
            dataset,
            physical,
            source,
            embedder.model_id,
            model_fingerprint(embedder),
        )
        self._cache[collection] = context
        return context
