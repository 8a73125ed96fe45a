"""Prometheus metrics of one app, in a registry of its own (several apps can share a process).

Request counts and latencies are labelled by route template (never the raw path, which a
client could make unbounded), API key checks by key name (never the key), the ingest queue
depth is read from Redis at scrape time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence

import redis
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import CdeqError
from app.jobs.recovery import METRICS
from app.queue import INGEST_QUEUE

log = logging.getLogger(__name__)

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class _QueueDepth(Collector):
    """Length of the Redis list that Celery's Redis broker keeps for the ingest queue."""

    def __init__(self, client: Callable[[], redis.Redis | None]) -> None:
        self._client = client

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        client = self._client()
        if client is None:
            return  # in-process mode: no queue
        try:
            depth = int(client.llen(INGEST_QUEUE))
        except redis.RedisError as exc:
            log.warning("queue depth unavailable: %s", exc)
            return
        family = self._family()
        family.add_metric([], depth)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "cdeq_ingest_queue_depth", f"Batches waiting in the Redis list {INGEST_QUEUE!r}"
        )


class _ContextRebuilds(Collector):
    """Context rebuilds started, by trigger (manual, auto-generic, auto-growth), read at scrape
    time: from Redis with a queue (every process's), else this process's own count."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[CounterMetricFamily]:
        try:
            counts = self._counts()
        except CdeqError as exc:
            log.warning("rebuild counts unavailable: %s", exc)
            return
        family = self._family()
        for trigger, count in sorted(counts.items()):
            family.add_metric([trigger], count)
        yield family

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "cdeq_context_rebuilds", "Context rebuilds started, by trigger", labels=["trigger"]
        )


# Counters the workers keep in Redis (app.jobs: `RedisJobStore.count`), served as totals.
RECOVERY_COUNTERS = {
    "reconciled_batches": "Batches the reconciler queued again (dead worker, lost or unsent message)",
    "expired_leases": "Batch leases that expired because their worker stopped heartbeating",
    "redeliveries": "Batch runs that started after a worker died on the same batch",
    "oom_splits": "Forward batches split in half after a CUDA out-of-memory error",
    "failed_rebuilds": "Context rebuilds given up (the live version kept), e.g. a batch crashed "
    "its worker too often",
    "retries_exhausted": "Batches failed because a transient fault outlasted CDEQ_INGEST__MAX_RETRIES",
    "model_mismatches": "Writes into a context version refused: the worker's model is another one",
    "orphan_rebuilds": "Rebuild markers without a running job, cleared by the reconciler",
}


class _RecoveryCounters(Collector):
    """Workers' recovery counters, read from the Redis hash `cdeq:metrics` at scrape time."""

    def __init__(self, client: Callable[[], redis.Redis | None]) -> None:
        self._client = client

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield from self._families({}).values()

    def collect(self) -> Iterator[CounterMetricFamily]:
        client = self._client()
        if client is None:
            return  # in-process mode: no workers
        try:
            raw = client.hgetall(METRICS)
        except redis.RedisError as exc:
            log.warning("recovery counters unavailable: %s", exc)
            return
        values = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}
        yield from self._families(values).values()

    @staticmethod
    def _families(values: dict[str, int]) -> dict[str, CounterMetricFamily]:
        families = {}
        for name, help_text in RECOVERY_COUNTERS.items():
            family = CounterMetricFamily(f"cdeq_{name}", help_text)
            family.add_metric([], values.get(name, 0))
            families[name] = family
        return families


class Metrics:
    """This app's metrics; also the model server's observer (batches, cache, rejections)."""

    def __init__(
        self,
        redis_client: Callable[[], redis.Redis | None],
        queue: Callable[[], tuple[int, int, float]],
        rebuilds: Callable[[], dict[str, int]] | None = None,
        *,
        process: bool = True,
    ) -> None:
        self.registry = CollectorRegistry()
        if process:  # prometheus_client's defaults, in this app's own registry
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.requests = Counter(
            "cdeq_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cdeq_http_request_duration_seconds",
            "HTTP request latency by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        # By key name (never the key): "(missing)" and "(invalid)" for 401s without a known key;
        # 404 counts the requests refused because the collection is out of the key's scope.
        self.auth_refusals = Counter(
            "cdeq_auth_refusals",
            "Requests refused by API key checks, by key name and status (401, 403, 404)",
            ["key", "status"],
            registry=self.registry,
        )
        self.key_requests = Counter(
            "cdeq_api_key_requests",
            "Requests that came with a valid API key, by key name",
            ["key"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "cdeq_embedded_tokens",
            "Tokens embedded for /v1/embeddings, by input type",
            ["input_type"],
            registry=self.registry,
        )
        # The model server: `queue()` gives (tokens waiting or running, parts waiting, cache
        # hit ratio) of this process's batching queue, read at scrape time.
        for name, doc, pick in (
            (
                "cdeq_serve_queue_tokens",
                "Tokens (prefix included) waiting or running in the model server",
                0,
            ),
            (
                "cdeq_serve_queue_depth",
                "Requests (or parts of large ones) waiting for a forward",
                1,
            ),
            ("cdeq_serve_cache_hit_ratio", "Query cache hits / lookups since start", 2),
        ):
            gauge = Gauge(name, doc, registry=self.registry)
            gauge.set_function(lambda pick=pick: float(queue()[pick]))  # type: ignore[misc]
        self.batch_rows = Histogram(
            "cdeq_serve_batch_size",
            "Texts per packed forward of the model server",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )
        self.batch_tokens = Counter(
            "cdeq_serve_tokens",
            "Tokens (prefix included) run by the model server",
            registry=self.registry,
        )
        self.queue_time = Histogram(
            "cdeq_serve_queue_seconds",
            "Time a request waited in the model server's queue before its forward",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.forward_time = Histogram(
            "cdeq_serve_forward_seconds",
            "Time of one packed forward of the model server",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.cache_lookups = Counter(
            "cdeq_serve_cache_lookups",
            "Query cache lookups by result",
            ["result"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "cdeq_serve_rejected",
            "Requests refused with 429 because the model server's queue was full",
            registry=self.registry,
        )
        self.registry.register(_QueueDepth(redis_client))
        self.registry.register(_RecoveryCounters(redis_client))
        if rebuilds is not None:
            self.registry.register(_ContextRebuilds(rebuilds))

    # ---- ServeObserver ------------------------------------------------------------------
    def batch(self, rows: int, tokens: int, waits_s: Sequence[float], forward_s: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_tokens.inc(tokens)
        for wait in waits_s:
            self.queue_time.observe(wait)
        self.forward_time.observe(forward_s)

    def cache(self, hits: int, misses: int) -> None:
        if hits:
            self.cache_lookups.labels("hit").inc(hits)
        if misses:
            self.cache_lookups.labels("miss").inc(misses)

    def rejected(self) -> None:
        self.rejections.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware that counts and times every request by its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the app answers otherwise

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            label = str(getattr(route, "path", "unmatched"))
            method = scope.get("method", "")
            method = method if method in _METHODS else "other"
            self.metrics.requests.labels(label, method, str(status)).inc()
            self.metrics.latency.labels(label, method, str(status)).observe(
                time.perf_counter() - started
            )
