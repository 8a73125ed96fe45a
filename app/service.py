"""The composition root: builds model, store, job records, queue and contexts from Settings.

Everything is created on first use, so a producer that only enqueues never loads the model,
and a worker process loads it once (after fork). Entry points hold one `Cdeq` each.
"""

from __future__ import annotations

import threading
from functools import cached_property
from pathlib import Path
from typing import Any

import redis

from app.config import Settings, load_settings
from app.contexts import Contexts, LockFactory, redis_lock_factory, thread_lock_factory
from app.errors import StoreUnavailable
from app.jobs import JobStore
from app.model import CdeEmbedder
from app.model.checkpoint import read_config
from app.queue import CeleryDispatcher, Dispatcher, InlineDispatcher, make_celery
from app.store import QdrantStore


class Cdeq:
    """One process's view of the service. Pass parts in to share or replace them (tests)."""

    def __init__(
        self,
        settings: Settings,
        *,
        embedder: CdeEmbedder | None = None,
        store: QdrantStore | None = None,
        redis_client: redis.Redis | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        if embedder is not None:
            self.__dict__["embedder"] = embedder
        if store is not None:
            self.__dict__["store"] = store
        if redis_client is not None:
            self.__dict__["redis"] = redis_client
        if dispatcher is not None:
            self.__dict__["dispatcher"] = dispatcher

    @cached_property
    def embedder(self) -> CdeEmbedder:
        m = self.settings.model
        return CdeEmbedder.from_pretrained(m.name, device=m.device, dtype=m.dtype, token_budget=m.token_budget)

    @cached_property
    def store(self) -> QdrantStore:
        store = QdrantStore.from_settings(self.settings.qdrant, dim=self.model_dim())
        if not self.settings.qdrant.url:
            # Embedded storage belongs to this process alone: shape it on first use, so a
            # first try needs no `cdeq migrate`. A server is migrated once, by `cdeq migrate`.
            from migrations import migrate

            migrate(store)
        return store

    @cached_property
    def redis(self) -> redis.Redis | None:
        if not self.settings.redis.url:
            return None
        return redis.Redis.from_url(
            self.settings.redis.url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )

    def model_dim(self) -> int:
        """Vector size of the configured model, without loading it when avoidable."""
        if "embedder" in self.__dict__:
            return self.embedder.dim
        folder = Path(self.settings.model.name).expanduser()
        if folder.is_dir():
            return read_config(folder).backbone.n_embd
        return 768  # cde-small-v1 from the hub

    @property
    def queued(self) -> bool:
        """True when batches go through Redis/Celery; False in embedded mode."""
        return self.redis is not None

    @cached_property
    def jobs(self) -> JobStore:
        if self.redis is None:
            raise StoreUnavailable(
                "job records need Redis: set CDEQ_REDIS__URL (in embedded mode `cdeq ingest` runs "
                "the job at once and prints its outcome)",
                retry_after_s=0,
            )
        return JobStore(self.redis, ttl_s=self.settings.ingest.job_ttl_s)

    @cached_property
    def celery(self) -> Any:
        return make_celery(self.settings)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        if self.redis is None:
            from app.ingest import process_batch

            return InlineDispatcher(lambda job, coll, idx, docs: process_batch(self, job, coll, idx, docs))
        return CeleryDispatcher(self.celery)

    @cached_property
    def contexts(self) -> Contexts:
        lock: LockFactory
        if self.redis is not None:
            lock = redis_lock_factory(
                self.redis, timeout_s=self.settings.ingest.context_lock_timeout_s, wait_s=10.0
            )
        else:
            lock = thread_lock_factory()
        return Contexts(self.store, lambda: self.embedder, lock, self.settings.ingest)

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
        if self.__dict__.get("redis") is not None:
            self.redis.close()  # type: ignore[union-attr]


_default: Cdeq | None = None
_default_lock = threading.Lock()


def default_service() -> Cdeq:
    """The process-wide service built from the environment, on first use (never at import)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Cdeq(load_settings())
        return _default


def set_default_service(service: Cdeq | None) -> None:
    """Install (or clear) the service that module-level use cases use by default."""
    global _default
    with _default_lock:
        _default = service
