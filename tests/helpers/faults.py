"""Real parts with a staged fault or a counter: a spy embedder, a store with an outage."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from app.errors import StoreUnavailable
from app.model import CdeEmbedder
from app.store import QdrantStore


class CountingEmbedder:
    """The real embedder, counting stage-1 runs (a spy, not a mock)."""

    def __init__(self, inner: CdeEmbedder) -> None:
        self.inner = inner
        self.context_calls = 0
        self.documents_embedded: list[str] = []  # every stage-2 document text, in order

    def embed_context(self, *args: Any, **kwargs: Any) -> np.ndarray:
        self.context_calls += 1
        return self.inner.embed_context(*args, **kwargs)

    def embed_documents(self, texts: Any, *args: Any, **kwargs: Any) -> Any:
        self.documents_embedded.extend(texts)
        return self.inner.embed_documents(texts, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FlakyStore(QdrantStore):
    """A real local-mode store whose first `failures` upserts raise StoreUnavailable, the way
    a Qdrant outage surfaces (simulated: no server can be stopped and restarted here)."""

    failures = 0

    def upsert(self, physical: str, points: Any) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("simulated Qdrant outage", retry_after_s=0.1)
        super().upsert(physical, points)


class PoisonEmbedder(CountingEmbedder):
    """The real embedder, refusing (as InvalidInput) any batch that contains `poison`."""

    def __init__(self, inner: CdeEmbedder, poison: str) -> None:
        super().__init__(inner)
        self.poison = poison

    def embed_documents(self, texts: Any, *args: Any, **kwargs: Any) -> Any:
        from app.errors import InvalidInput

        if self.poison in texts:
            raise InvalidInput("simulated: the model refuses this text")
        return self.inner.embed_documents(texts, *args, **kwargs)


class GatedEmbedder(CountingEmbedder):
    """The real embedder whose stage-2 calls wait until `gate` is set, recording the texts of
    each call: it holds a model server's forward still, so a test can fill its queue."""

    def __init__(self, inner: CdeEmbedder) -> None:
        import threading

        super().__init__(inner)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[list[str]] = []

    def _held(self, run: Any, texts: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(list(texts))
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"
        return run(texts, *args, **kwargs)

    def embed_queries(self, texts: Any, *args: Any, **kwargs: Any) -> Any:
        return self._held(self.inner.embed_queries, texts, *args, **kwargs)

    def embed_documents(self, texts: Any, *args: Any, **kwargs: Any) -> Any:
        return self._held(self.inner.embed_documents, texts, *args, **kwargs)


class PausingEmbedder(CountingEmbedder):
    """The real embedder, whose `pause_at`-th stage-2 call from a thread other than the test's
    waits until the test opens it: a worker held mid-rebuild, so the test can ingest and
    delete while it runs (only the timing is staged)."""

    def __init__(self, inner: CdeEmbedder, pause_at: int) -> None:
        super().__init__(inner)
        self.pause_at = pause_at
        self.worker_calls = 0
        self.paused = threading.Event()
        self.release = threading.Event()

    def embed_documents(self, texts: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            self.worker_calls += 1
            if self.worker_calls == self.pause_at:
                self.paused.set()
                if not self.release.wait(120):
                    raise TimeoutError("the test never opened the gate")
        return super().embed_documents(texts, *args, **kwargs)
