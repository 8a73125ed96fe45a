"""The HTTP API app (`create_app`) and the server that runs it (`serve`, behind `cdeq serve`).

The model and the generic context are loaded once at start-up. Every model call of the API
goes through the model server (`app.serving`): one batching queue that packs concurrent
requests into shared forwards and refuses work beyond its token bound with 429, so the event
loop keeps answering (probes, 429s) while the CPU or GPU is busy.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from app.api import collections, embeddings, errors, health, tei
from app.api.auth import KeyRing, exposure_check
from app.api.limits import BodyLimit
from app.api.metrics import Metrics, MetricsMiddleware
from app.api.request_id import RequestId
from app.config import Settings
from app.errors import StoreUnavailable
from app.service import Cdeq
from app.serving import ServedEmbedder

log = logging.getLogger(__name__)


def prepare(service: Cdeq) -> None:
    """Load what every request needs (idempotent): the model, the generic context, the store.

    A Qdrant server that does not answer yet is not fatal (/readyz reports it); a model that
    cannot be loaded is."""
    loaded = service.has("embedder")
    embedder = service.serve_model()
    try:
        service.store  # noqa: B018 (opens the client; local mode also shapes its folder)
    except StoreUnavailable as exc:
        log.warning("Qdrant is not reachable at start-up (%s); /readyz reports it", exc)
    service.contexts.generic()
    if not loaded:
        log.info(
            "model %s loaded (dim %d) on %s as %s; batching %s",
            embedder.model_id,
            embedder.dim,
            embedder.device,
            str(embedder.dtype).removeprefix("torch."),
            "on" if embedder.batching else "off",
        )


def create_app(settings: Settings, service: Cdeq | None = None) -> FastAPI:
    """The API over ``service`` (built from ``settings`` when None, and then closed at shutdown).

    Raises InvalidInput when the settings would expose an open API on a non-loopback address."""
    api = settings.api
    keys = KeyRing.from_settings(api)
    exposure_check(api, keys)
    owned = service is None
    svc = service if service is not None else Cdeq(settings)

    def queue() -> tuple[int, int, float]:
        served = svc.__dict__.get("embedder")
        if not isinstance(served, ServedEmbedder):
            return (0, 0, 0.0)
        return (served.queued_tokens, served.queued_requests, served.cache_hit_ratio())

    metrics = Metrics(lambda: svc.redis, queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(prepare, svc)
        served = svc.serve_model()
        served.add_observer(metrics)
        try:
            yield
        finally:
            served.remove_observer(metrics)
            if owned:
                svc.close()

    app = FastAPI(
        title="cdeq",
        version="0.1.0",
        summary="Contextual document embeddings (cde-small-v1): OpenAI-compatible embeddings, "
        "collections and search",
        lifespan=lifespan,
    )
    app.state.service = svc
    app.state.api = api
    app.state.keys = keys
    app.state.metrics = metrics
    app.state.model_names = {api.model_name, settings.model.name}
    errors.install(app)
    app.include_router(embeddings.router)
    app.include_router(collections.router)
    app.include_router(health.router)
    app.include_router(tei.router)
    # Added last = outermost: metrics see every answer, including the body limit's 413s, and
    # every answer (and log line) carries the request id.
    app.add_middleware(BodyLimit, max_bytes=api.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestId)
    return app


def serve(settings: Settings) -> int:
    """Run the API with uvicorn until interrupted; 0 after a clean shutdown."""
    app = create_app(settings)
    # Load before binding the port, so a broken model or Qdrant folder surfaces as a clear
    # error and exit code from `cdeq serve` (the lifespan then finds everything loaded).
    prepare(app.state.service)
    json_logs = settings.log.format == "json"
    if json_logs:  # uvicorn's loggers then propagate to the root's JSON handler
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.INFO)
    config = uvicorn.Config(
        app,
        host=settings.api.host,
        port=settings.api.port,
        access_log=True,  # method, path and status only: never headers, so never a key
        server_header=False,
        timeout_graceful_shutdown=30,
        log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
