"""The model server of the API process: one batching queue in front of `CdeEmbedder`.

A CDE stage-2 text is expensive whatever its length (every row carries the 520-token context
prefix), and a GPU is only busy when rows are many. So concurrent callers' texts are packed
into shared forwards, as Text Embeddings Inference does:

- callers (request threads) tokenize their own texts, check them, and queue them; a single
  model thread takes the oldest waiting request, waits at most `max_wait_ms` for more, and
  packs every waiting request with the **same context and input type** (the two things one
  `embed_queries` / `embed_documents` call shares) up to `max_batch` texts and
  `max_batch_tokens` tokens into one call of the model. Each caller gets exactly its rows, in
  order, with its own token counts and truncation flags. The model's own batching never
  changes a vector (cos ≥ 0.99999 against a text embedded alone), so packing does not either.
- back-pressure: the tokens waiting or running (prefix included) are bounded by
  `max_queue_tokens`; over it a request gets `Overloaded` (HTTP 429 with Retry-After, from the
  measured throughput) at once, before anything is queued, so nothing admitted is ever lost.
- a caller that gives up (a cancelled future) is skipped when its turn comes; a request whose
  forward fails is retried alone, so one bad request cannot fail the others of its batch.
- query embeddings are cached (LRU) by (model fingerprint, context key, input type, text);
  the context key is a digest of the dataset embeddings, so a context swap misses.

`ServedEmbedder` *is* a `CdeEmbedder` (same object state, same methods): everything but
`embed_queries` / `embed_documents` behaves exactly as the wrapped embedder, so the use cases
need not know whether they run behind a queue.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from app.config import ServeSettings
from app.errors import Overloaded
from app.model import DOCUMENT_PREFIX, QUERY_PREFIX, CdeEmbedder, Embeddings
from app.model.embedder import Progress

log = logging.getLogger(__name__)

QUERY, DOCUMENT = "query", "document"
_PREFIX = {QUERY: QUERY_PREFIX, DOCUMENT: DOCUMENT_PREFIX}


def model_fingerprint(embedder: CdeEmbedder) -> str:
    """What identifies the weights in cache keys (same weights, same vectors)."""
    return embedder.fingerprint


class ServeObserver(Protocol):
    """Receives what the server measures (the API turns it into Prometheus metrics)."""

    def batch(self, rows: int, tokens: int, waits_s: Sequence[float], forward_s: float) -> None: ...

    def cache(self, hits: int, misses: int) -> None: ...

    def rejected(self) -> None: ...


@dataclass(eq=False)
class _Part:
    """Some texts of one caller, queued for one forward."""

    key: tuple[str, str]  # (context key, input type): what a packed forward shares
    texts: list[str]
    dataset: Any
    cost: int  # tokens, prefix included
    enqueued: float
    future: Future[Embeddings] = field(default_factory=Future)


class _Cache:
    """A thread-safe LRU of single-text results."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str, str, str], tuple[np.ndarray, int, bool]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str, str, str]) -> tuple[np.ndarray, int, bool] | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: tuple[str, str, str, str], value: tuple[np.ndarray, int, bool]) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class ServedEmbedder(CdeEmbedder):
    """A `CdeEmbedder` whose stage-2 calls go through one batching queue (see the module doc)."""

    def __init__(
        self, inner: CdeEmbedder, settings: ServeSettings, observer: ServeObserver | None = None
    ) -> None:
        # Share the wrapped embedder's whole state (model, tokenizer, device, facts added by
        # later model versions) instead of re-running its constructor: one model in memory.
        self.__dict__.update(inner.__dict__)
        self.inner = inner
        self.serve_settings = settings
        self.fingerprint_key = model_fingerprint(inner)
        self.max_batch = settings.max_batch
        self.max_batch_tokens = settings.max_batch_tokens or inner.token_budget
        self.max_queue_tokens = settings.max_queue_tokens
        self.max_wait_s = settings.max_wait_ms / 1000
        self.batching = settings.batching
        self.__observers: list[ServeObserver] = [observer] if observer is not None else []
        self.__cache = _Cache(settings.cache_size) if settings.cache_size > 0 else None
        self.__cond = threading.Condition()
        self.__pending: deque[_Part] = deque()
        self.__queued_tokens = 0  # admitted and not yet finished: waiting or running
        self.__rate = 0.0  # tokens per second of recent forwards (for Retry-After)
        self.__closed = False
        self.model_threads = settings.model_threads
        self.__threads: list[threading.Thread] = []
        self.__context_keys: dict[int, tuple[weakref.ref[Any], str]] = {}
        self.__keys_lock = threading.Lock()
        self.__local = threading.local()

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
        return self.__queued_tokens

    @property
    def queued_requests(self) -> int:
        """Parts waiting for a forward (not counting the one running)."""
        return len(self.__pending)

    @property
    def cache_entries(self) -> int:
        return len(self.__cache) if self.__cache is not None else 0

    def cache_hit_ratio(self) -> float:
        if self.__cache is None or self.__cache.hits + self.__cache.misses == 0:
            return 0.0
        return self.__cache.hits / (self.__cache.hits + self.__cache.misses)

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
        before = getattr(self.__local, "wait", False)
        self.__local.wait = True
        try:
            yield
        finally:
            self.__local.wait = before

    def check_room(self) -> None:
        """Overloaded when the queue is full now (a cheap check before accepting work)."""
        with self.__cond:
            if self.__queued_tokens >= self.max_queue_tokens:
                raise self.__overloaded(0)

    def __overloaded(self, cost: int) -> Overloaded:
        for observer in self.__observers:
            observer.rejected()
        backlog = self.__queued_tokens + cost
        seconds = backlog / self.__rate if self.__rate > 0 else 1.0
        return Overloaded(
            f"the embedding queue is full ({self.__queued_tokens} of {self.max_queue_tokens} "
            f"tokens waiting or running; this request needs {cost}); retry after the "
            "Retry-After delay",
            retry_after_s=min(60.0, max(1.0, seconds)),
        )

    def __admit(self, cost: int) -> None:
        """Count `cost` tokens in, or raise Overloaded (or wait, in `waiting_for_room`).
        A request larger than the whole bound is admitted when the queue is empty."""
        wait = getattr(self.__local, "wait", False)
        with self.__cond:
            while True:
                if self.__closed:
                    raise Overloaded("the model server is shutting down", retry_after_s=5.0)
                fits = self.__queued_tokens + cost <= self.max_queue_tokens
                if fits or self.__queued_tokens == 0:
                    self.__queued_tokens += cost
                    return
                if not wait:
                    raise self.__overloaded(cost)
                self.__cond.wait(1.0)

    def __release(self, cost: int) -> None:
        with self.__cond:
            self.__queued_tokens -= cost
            self.__cond.notify_all()

    # ---- serving one call ---------------------------------------------------------------
    def __serve(
        self, texts: Sequence[str], dataset: Any, kind: str, on_progress: Progress | None
    ) -> Embeddings:
        ids, _ = self.tokenize(texts, _PREFIX[kind])  # checks the texts, in the caller
        self.check_dataset_embeddings(dataset)  # bad input fails here, never in a batch
        if not ids:
            return Embeddings(np.zeros((0, self.dim), dtype=np.float32), [], [])
        context = self.context_key(dataset)
        results: list[tuple[np.ndarray, int, bool] | None] = [None] * len(texts)
        cached = self.__cache is not None and kind == QUERY
        keys = [(self.fingerprint_key, context, kind, t) for t in texts]
        if cached:
            assert self.__cache is not None
            for i, key in enumerate(keys):
                results[i] = self.__cache.get(key)
            hits = sum(r is not None for r in results)
            for observer in self.__observers:
                observer.cache(hits, len(texts) - hits)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            prefix = self.config.prefix_length
            costs = [prefix + len(ids[i]) for i in missing]
            out = self.__compute([texts[i] for i in missing], costs, dataset, (context, kind))
            for row, i in enumerate(missing):
                results[i] = (out.vectors[row], out.token_counts[row], out.truncated[row])
                if cached:
                    assert self.__cache is not None
                    self.__cache.put(keys[i], (out.vectors[row].copy(), *results[i][1:]))  # type: ignore[index]
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
            self.__admit(total)
            try:
                started = time.perf_counter()
                out = self.__forward(key[1], texts, dataset)
                self.__measured(len(texts), total, [0.0], time.perf_counter() - started)
                return out
            finally:
                self.__release(total)
        futures = self.submit(texts, costs, dataset, key)
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

    def submit(
        self, texts: list[str], costs: list[int], dataset: Any, key: tuple[str, str]
    ) -> list[Future[Embeddings]]:
        """Admit and queue checked texts (`costs`: tokens each, prefix included) for packed
        forwards; one future per part, in order. Cancelling a future that has not started
        drops its part and frees its tokens. Raises Overloaded when the queue is full."""
        self.__admit(sum(costs))
        parts = self.__split(texts, costs, dataset, key)
        self.__enqueue(parts)
        return [part.future for part in parts]

    def costs(self, texts: Sequence[str], kind: str) -> list[int]:
        """Tokens each text costs in a forward: its own (after truncation) plus the prefix."""
        ids, _ = self.tokenize(texts, _PREFIX[kind])
        return [self.config.prefix_length + len(x) for x in ids]

    def __split(
        self, texts: list[str], costs: list[int], dataset: Any, key: tuple[str, str]
    ) -> list[_Part]:
        """Cut a large call into parts of at most one packed forward each, so the queries of
        other callers can run between them."""
        now = time.monotonic()
        parts: list[_Part] = []
        start, tokens = 0, 0
        for i, cost in enumerate(costs):
            full = i - start >= self.max_batch or tokens + cost > self.max_batch_tokens
            if i > start and full:
                parts.append(_Part(key, texts[start:i], dataset, tokens, now))
                start, tokens = i, 0
            tokens += cost
        parts.append(_Part(key, texts[start:], dataset, tokens, now))
        return parts

    def __enqueue(self, parts: list[_Part]) -> None:
        with self.__cond:
            while len(self.__threads) < self.model_threads:
                thread = threading.Thread(
                    target=self.__loop, name=f"cdeq-model-server-{len(self.__threads)}", daemon=True
                )
                thread.start()
                self.__threads.append(thread)
            self.__pending.extend(parts)
            self.__cond.notify_all()

    # ---- the model thread ---------------------------------------------------------------
    def __loop(self) -> None:
        while True:
            with self.__cond:
                while not self.__pending and not self.__closed:
                    self.__cond.wait()
                if self.__closed:
                    for part in self.__pending:
                        part.future.cancel()
                    self.__pending.clear()
                    return
                first = self.__pending[0]
                deadline = first.enqueued + self.max_wait_s
                while not self.__closed and not self.__full(first.key):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.__cond.wait(left)
                batch = self.__take(first.key)
            if batch:
                self.__run(batch)

    def __full(self, key: tuple[str, str]) -> bool:
        rows = tokens = 0
        for part in self.__pending:
            if part.key == key:
                rows += len(part.texts)
                tokens += part.cost
        return rows >= self.max_batch or tokens >= self.max_batch_tokens

    def __take(self, key: tuple[str, str]) -> list[_Part]:
        """The oldest waiting parts with this key that fit one forward (always the first);
        parts whose caller gave up are dropped here."""
        taken: list[_Part] = []
        kept: deque[_Part] = deque()
        rows = tokens = 0
        while self.__pending:
            part = self.__pending.popleft()
            if part.key != key:
                kept.append(part)
                continue
            fits = rows + len(part.texts) <= self.max_batch
            fits = fits and tokens + part.cost <= self.max_batch_tokens
            if taken and not fits:
                kept.append(part)
                continue
            if not part.future.set_running_or_notify_cancel():  # cancelled: its caller left
                self.__queued_tokens -= part.cost
                self.__cond.notify_all()
                continue
            taken.append(part)
            rows += len(part.texts)
            tokens += part.cost
        self.__pending = kept
        return taken

    def __run(self, batch: list[_Part]) -> None:
        kind = batch[0].key[1]
        texts = [t for part in batch for t in part.texts]
        started = time.perf_counter()
        try:
            out = self.__forward(kind, texts, batch[0].dataset)
        except Exception as exc:
            if len(batch) == 1:
                self.__finish(batch[0], error=exc)
                return
            log.warning("a packed forward failed (%s); running its requests one by one", exc)
            for part in batch:
                try:
                    self.__finish(part, self.__forward(kind, part.texts, part.dataset))
                except Exception as one:
                    self.__finish(part, error=one)
            return
        self.__measured(
            len(texts),
            sum(p.cost for p in batch),
            [time.monotonic() - p.enqueued for p in batch],
            time.perf_counter() - started,
        )
        row = 0
        for part in batch:
            n = len(part.texts)
            self.__finish(
                part,
                Embeddings(
                    out.vectors[row : row + n],
                    out.token_counts[row : row + n],
                    out.truncated[row : row + n],
                ),
            )
            row += n

    def __forward(self, kind: str, texts: list[str], dataset: Any) -> Embeddings:
        # The wrapped embedder's own call: the library path, its batching and its checks.
        run = self.inner.embed_queries if kind == QUERY else self.inner.embed_documents
        return run(texts, dataset)

    def __finish(
        self, part: _Part, out: Embeddings | None = None, *, error: BaseException | None = None
    ) -> None:
        if error is not None:
            part.future.set_exception(error)
        else:
            part.future.set_result(out)  # type: ignore[arg-type]
        self.__release(part.cost)

    def __measured(self, rows: int, tokens: int, waits: list[float], forward_s: float) -> None:
        if forward_s > 0:
            rate = tokens / forward_s
            self.__rate = rate if self.__rate == 0 else 0.8 * self.__rate + 0.2 * rate
        for observer in self.__observers:
            observer.batch(rows, tokens, waits, forward_s)

    # ---- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        """Stop the model thread; waiting callers get CancelledError, new ones Overloaded."""
        with self.__cond:
            self.__closed = True
            self.__cond.notify_all()
        for thread in self.__threads:
            thread.join(timeout=30)


__all__ = ["DOCUMENT", "QUERY", "ServeObserver", "ServedEmbedder", "model_fingerprint"]
