"""`ServedEmbedder`: a `CdeEmbedder` whose stage-2 calls go through the batcher, with the
query cache in front (see `app.serving`)."""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from app.config import ServeSettings
from app.model import DOCUMENT_PREFIX, QUERY_PREFIX, CdeEmbedder, Embeddings
from app.model.values import Progress
from app.serving.batcher import DOCUMENT, QUERY, Batcher, ServeObserver
from app.serving.cache import CacheEntry, QueryCache

_PREFIX = {QUERY: QUERY_PREFIX, DOCUMENT: DOCUMENT_PREFIX}


def model_fingerprint(embedder: CdeEmbedder) -> str:
    """What identifies the weights in cache keys (same weights, same vectors)."""
    return embedder.fingerprint


class ServedEmbedder(CdeEmbedder):
    """A `CdeEmbedder` whose stage-2 calls go through one batching queue (see `app.serving`)."""

    def __init__(
        self, inner: CdeEmbedder, settings: ServeSettings, observer: ServeObserver | None = None
    ) -> None:
        # Share the wrapped embedder's whole state (model, tokenizer, device, facts added by
        # later model versions) instead of re-running its constructor: one model in memory.
        self.__dict__.update(inner.__dict__)
        self.inner = inner
        self.serve_settings = settings
        self.fingerprint_key = model_fingerprint(inner)
        self.batching = settings.batching
        self.model_threads = settings.model_threads
        self.__observers: list[ServeObserver] = [observer] if observer is not None else []
        self.__cache = QueryCache(settings.cache_size) if settings.cache_size > 0 else None
        self.__batcher = Batcher(
            self.__forward,
            settings,
            settings.max_batch_tokens or inner.token_budget,
            self.__observers,
            cpu=inner.device.type == "cpu",
        )
        self.max_batch = self.__batcher.max_batch
        self.max_batch_tokens = self.__batcher.max_batch_tokens
        self.max_queue_tokens = self.__batcher.max_queue_tokens
        self.__context_keys: dict[int, tuple[weakref.ref[Any], str]] = {}
        self.__keys_lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # Only reached for what the copied state lacks: a wrapper of the real embedder (a
        # test spy) keeps the model in its own `inner`.
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    # ---- observation --------------------------------------------------------------------
    def add_observer(self, observer: ServeObserver) -> None:
        self.__observers.append(observer)

    def remove_observer(self, observer: ServeObserver) -> None:
        if observer in self.__observers:
            self.__observers.remove(observer)

    @property
    def queued_tokens(self) -> int:
        """Tokens (prefix included) admitted and not finished yet."""
        return self.__batcher.queued_tokens

    @property
    def queued_requests(self) -> int:
        """Parts waiting for a forward (not counting those running)."""
        return self.__batcher.queued_requests

    @property
    def cache_entries(self) -> int:
        return len(self.__cache) if self.__cache is not None else 0

    def cache_hit_ratio(self) -> float:
        return self.__cache.hit_ratio() if self.__cache is not None else 0.0

    # ---- the library interface ----------------------------------------------------------
    def embed_queries(
        self, texts: Sequence[str], dataset_embeddings: Any, *, on_progress: Progress | None = None
    ) -> Embeddings:
        """As `CdeEmbedder.embed_queries`, packed with other callers' queries (and cached)."""
        return self.__serve(texts, dataset_embeddings, QUERY, on_progress)

    def embed_documents(
        self, texts: Sequence[str], dataset_embeddings: Any, *, on_progress: Progress | None = None
    ) -> Embeddings:
        """As `CdeEmbedder.embed_documents`, packed with other callers' documents."""
        return self.__serve(texts, dataset_embeddings, DOCUMENT, on_progress)

    def context_key(self, dataset_embeddings: Any) -> str:
        """A digest of the dataset embeddings, computed once per array object (contexts are
        cached by version, so one version is one object)."""
        ident = id(dataset_embeddings)
        with self.__keys_lock:
            known = self.__context_keys.get(ident)
            if known is not None and known[0]() is dataset_embeddings:
                return known[1]
        if isinstance(dataset_embeddings, torch.Tensor):
            raw = dataset_embeddings.detach().float().cpu().numpy()
        else:
            raw = np.asarray(dataset_embeddings)
        digest = hashlib.blake2b(np.ascontiguousarray(raw).tobytes(), digest_size=16)
        key = f"{raw.dtype}{raw.shape}:{digest.hexdigest()}"
        try:
            ref = weakref.ref(dataset_embeddings)
        except TypeError:  # an object without weak references: digest it every time
            return key
        with self.__keys_lock:
            if len(self.__context_keys) > 256:  # drop entries whose arrays are gone
                self.__context_keys = {
                    k: v for k, v in self.__context_keys.items() if v[0]() is not None
                }
            self.__context_keys[ident] = (ref, key)
        return key

    # ---- admission ----------------------------------------------------------------------
    @contextmanager
    def waiting_for_room(self) -> Iterator[None]:
        """In this thread, wait for room in the queue instead of getting Overloaded (for work
        already accepted, such as the batches of an in-process ingest job)."""
        with self.__batcher.waiting_for_room():
            yield

    def check_room(self) -> None:
        """Overloaded when the queue is full now (a cheap check before accepting work)."""
        self.__batcher.check_room()

    def submit(
        self, texts: list[str], costs: list[int], dataset: Any, key: tuple[str, str]
    ) -> list[Future[Embeddings]]:
        """Admit and queue checked texts for packed forwards (see `Batcher.submit`)."""
        return self.__batcher.submit(texts, costs, dataset, key)

    def costs(self, texts: Sequence[str], kind: str) -> list[int]:
        """Tokens each text costs in a forward: its own (after truncation) plus the prefix."""
        ids, _ = self.tokenize(texts, _PREFIX[kind])
        return [self.config.prefix_length + len(x) for x in ids]

    # ---- serving one call ---------------------------------------------------------------
    def __serve(
        self, texts: Sequence[str], dataset: Any, kind: str, on_progress: Progress | None
    ) -> Embeddings:
        ids, _ = self.tokenize(texts, _PREFIX[kind])  # checks the texts, in the caller
        self.check_dataset_embeddings(dataset)  # bad input fails here, never in a batch
        if not ids:
            return Embeddings(np.zeros((0, self.dim), dtype=np.float32), [], [])
        context = self.context_key(dataset)
        results: list[CacheEntry | None] = [None] * len(texts)
        cache = self.__cache if kind == QUERY else None
        keys = [(self.fingerprint_key, context, kind, t) for t in texts]
        if cache is not None:
            for i, key in enumerate(keys):
                results[i] = cache.get(key)
            hits = sum(r is not None for r in results)
            for observer in self.__observers:
                observer.cache(hits, len(texts) - hits)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            prefix = self.config.prefix_length
            costs = [prefix + len(ids[i]) for i in missing]
            out = self.__compute([texts[i] for i in missing], costs, dataset, (context, kind))
            for row, i in enumerate(missing):
                entry = (out.vectors[row], out.token_counts[row], out.truncated[row])
                results[i] = entry
                if cache is not None:
                    cache.put(keys[i], (entry[0].copy(), entry[1], entry[2]))
        done = [r for r in results if r is not None]
        if on_progress is not None:
            on_progress(len(done), len(done))
        return Embeddings(
            np.stack([r[0] for r in done]).astype(np.float32, copy=False),
            [r[1] for r in done],
            [r[2] for r in done],
        )

    def __compute(
        self, texts: list[str], costs: list[int], dataset: Any, key: tuple[str, str]
    ) -> Embeddings:
        if not self.batching:  # the per-request path: this thread runs its own forward
            total = sum(costs)
            self.__batcher.admit(total)
            try:
                started = time.perf_counter()
                out = self.__forward(key[1], texts, dataset)
                self.__batcher.measured(len(texts), total, [0.0], time.perf_counter() - started)
                return out
            finally:
                self.__batcher.release(total)
        futures = self.__batcher.submit(texts, costs, dataset, key)
        try:
            outs = [future.result() for future in futures]
        finally:
            for future in futures:  # a caller that stops waiting leaves nothing to compute
                future.cancel()
        return Embeddings(
            np.concatenate([o.vectors for o in outs]),
            [n for o in outs for n in o.token_counts],
            [t for o in outs for t in o.truncated],
        )

    def __forward(self, kind: str, texts: list[str], dataset: Any) -> Embeddings:
        # The wrapped embedder's own call: the library path, its batching and its checks.
        run = self.inner.embed_queries if kind == QUERY else self.inner.embed_documents
        return run(texts, dataset)

    # ---- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        """Stop the model threads; waiting callers get CancelledError, new ones Overloaded."""
        self.__batcher.close()
