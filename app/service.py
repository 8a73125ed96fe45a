"""The composition root: builds model, store, job records, queue and contexts from Settings.

Everything is created on first use, so a producer that only enqueues never loads the model,
and a worker process loads it once (after fork). Each entry point (CLI command, API
lifespan, worker process) builds one `Cdeq` and passes it to the use cases; there is no
process-wide default.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import redis

from app.bm25 import Bm25Terms
from app.config import Settings, load_settings
from app.contexts import Contexts
from app.errors import StoreUnavailable
from app.jobs import JobStore, MemoryJobStore, RedisJobStore
from app.locks import LockFactory, redis_lock_factory, thread_lock_factory
from app.model import CdeEmbedder
from app.model.checkpoint import read_config
from app.queue import CeleryDispatcher, Dispatcher, make_celery
from app.serving import ServedEmbedder
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
        jobs: JobStore | None = None,
    ) -> None:
        self.settings = settings
        given = {
            "embedder": embedder,
            "store": store,
            "redis": redis_client,
            "dispatcher": dispatcher,
            "jobs": jobs,
        }
        for name, part in given.items():
            if part is not None:
                self.__dict__[name] = part  # pre-fills the cached_property of that name

    @classmethod
    def from_env(cls, **overrides: Any) -> Cdeq:
        """A service configured from CDEQ_* variables (read now), with explicit overrides."""
        return cls(load_settings(**overrides))

    def has(self, part: str) -> bool:
        """Whether ``part`` (e.g. "embedder", "store") is built already, without building it."""
        return part in self.__dict__

    @cached_property
    def embedder(self) -> CdeEmbedder:
        m = self.settings.model
        return CdeEmbedder.from_pretrained(
            m.name,
            device=m.device,
            dtype=m.dtype,
            token_budget=m.token_budget,
            v2_head=m.v2_head,
        )

    def serve_model(self) -> ServedEmbedder:
        """Put the model behind one batching queue (the API process turns this on), so every
        stage-2 call of this service (searches, /v1/embeddings, in-process ingest) is packed
        with the others. Idempotent; `close()` stops it. Workers keep the plain embedder."""
        current = self.embedder
        if isinstance(current, ServedEmbedder):
            return current
        served = ServedEmbedder(current, self.settings.serve)
        self.__dict__["embedder"] = served  # replaces the cached_property's value
        return served

    @cached_property
    def bm25(self) -> Bm25Terms:
        """The BM25 term rules: the model's own tokenizer, CDEQ_SEARCH__BM25_TERMS."""
        return Bm25Terms(self.embedder.tokenizer, self.settings.search.bm25_terms)

    @cached_property
    def store(self) -> QdrantStore:
        store = QdrantStore.from_settings(self.settings.qdrant, dim=self.model_dim())
        if not self.settings.qdrant.url:
            # Local storage belongs to this process alone: shape it on first use, so a first
            # try needs no `cdeq migrate`. A server is migrated once, by `cdeq migrate`.
            from migrations import migrate

            migrate(store)
        return store

    @cached_property
    def redis(self) -> redis.Redis | None:
        if not self.settings.redis.url:
            return None
        return redis.Redis.from_url(
            self.settings.redis.url,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=30,
        )

    def model_dim(self) -> int:
        """Vector size of the configured model, without loading it when avoidable."""
        if self.has("embedder"):
            return self.embedder.dim
        folder = Path(self.settings.model.name).expanduser()
        if folder.is_dir():
            return read_config(folder).dim
        return 768  # cde-small-v1 from the hub

    def api_model_name(self) -> str:
        """The model name the API reports: the setting, else the checkpoint's family
        (cde-small-v1 / cde-small-v2), without loading the model when avoidable."""
        if self.settings.api.model_name:
            return self.settings.api.model_name
        if self.has("embedder"):
            return self.embedder.default_api_name
        folder = Path(self.settings.model.name).expanduser()
        if folder.is_dir():
            return f"cde-small-{read_config(folder).family}"
        return "cde-small-v2" if "cde-small-v2" in self.settings.model.name else "cde-small-v1"

    @property
    def queued(self) -> bool:
        """True when batches go through Redis and Celery workers; False in in-process mode."""
        return self.redis is not None

    @cached_property
    def jobs(self) -> JobStore:
        """Job records: in Redis with a queue, else in this process's memory."""
        if self.redis is None:
            return MemoryJobStore()
        return RedisJobStore(self.redis, ttl_s=self.settings.ingest.job_ttl_s)

    @cached_property
    def celery(self) -> Any:
        return make_celery(self.settings)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        if self.redis is None:
            raise StoreUnavailable(
                "the ingest queue needs Redis: set CDEQ_REDIS__URL", retry_after_s=0
            )
        return CeleryDispatcher(self.celery)

    @cached_property
    def locks(self) -> LockFactory:
        if self.redis is None:
            return thread_lock_factory()
        timeout = self.settings.ingest.context_lock_timeout_s
        return redis_lock_factory(
            self.redis, timeout_s=timeout, wait_s=self.settings.ingest.context_lock_wait_s
        )

    @cached_property
    def contexts(self) -> Contexts:
        return Contexts(self.store, lambda: self.embedder, self.locks, self.settings.ingest)

    def close(self) -> None:
        embedder = self.__dict__.get("embedder")
        if isinstance(embedder, ServedEmbedder):
            embedder.close()
        if self.has("store"):
            self.store.close()
        if self.__dict__.get("redis") is not None:
            self.redis.close()  # type: ignore[union-attr]
