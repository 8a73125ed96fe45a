"""The HTTP API app (`create_app`) and the server that runs it (`serve`, behind `cdeq serve`).

The model and the generic context are loaded once at start-up. Every model call of the API
goes through the model server (`app.serving`): one batching queue that packs concurrent
requests into shared forwards and refuses work beyond its token bound with 429, so the event
loop keeps answering (probes, 429s) while the CPU or GPU is busy.

Every response carries `X-Content-Type-Options: nosniff` and `Cache-Control: no-store`; the
access log never shows a query string (where a client may have put a key).
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import errno
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import collections, contexts, embeddings, errors, health, tei
from app.api.auth import KeyRing, exposure_check
from app.api.limits import BodyLimit, InFlight
from app.api.metrics import Metrics, MetricsMiddleware
from app.api.request_id import RequestId
from app.config import Settings
from app.errors import InvalidInput, ResourceBusy, StoreUnavailable
from app.lifecycle import rebuild_counts
from app.service import Cdeq
from app.serving import ServedEmbedder

log = logging.getLogger(__name__)

SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]


class SecurityHeaders:
    """ASGI middleware: no MIME sniffing of any answer, and no cache keeps one (they may hold
    documents, vectors or job details)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class DropQueryString(logging.Filter):
    """On uvicorn's access log: logs the path without its query string, so a key sent as
    `?api_key=…` (refused, but sent all the same) never reaches a log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


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

    metrics = Metrics(
        lambda: svc.redis,
        queue,
        lambda: rebuild_counts(service=svc),
        process=api.process_metrics,
    )
    ingest_in_flight = InFlight(
        api.max_ingest_in_flight, api.in_flight_wait_ms / 1000, "queued ingest request(s)"
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(prepare, svc)
        served = svc.serve_model()
        served.add_observer(metrics)
        ingest_in_flight.bind()
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
    app.state.ingest_in_flight = ingest_in_flight
    app.state.metrics = metrics
    app.state.model_name = svc.api_model_name()
    app.state.model_names = {app.state.model_name, settings.model.name}
    errors.install(app)
    app.include_router(embeddings.router)
    app.include_router(collections.router)
    app.include_router(contexts.router)
    app.include_router(health.router)
    app.include_router(tei.router)
    # Added last = outermost: metrics see every answer, including the body limit's 413s, and
    # every answer (and log line) carries the request id.
    app.add_middleware(BodyLimit, max_bytes=api.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestId)
    return app


M_ARENA_MAX = -8  # glibc's mallopt parameter number
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (default: 8 per core) unless MALLOC_ARENA_MAX is set.

    Requests run in a pool of worker threads; each thread that allocates under contention gets
    an arena of its own, and freed memory stays in it. Measured on a 500-request flood with the
    tiny model: RSS +11% over the warm-up level with the default, +6% with 2 arenas."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to cap
        return False


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, or ResourceBusy saying why not (the port is taken)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InvalidInput(f"cannot listen on {host!r}: {exc.strerror}", field="api.host") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ResourceBusy(
                f"cannot listen on {host}:{port}: the port is already in use (another "
                "`cdeq serve`?); choose another with --port or CDEQ_API__PORT"
            ) from None
        raise ResourceBusy(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _logging_config() -> dict[str, Any]:
    """uvicorn's text logging, with the access log on stderr too (stdout is for output)."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    return config


def serve(settings: Settings) -> int:
    """Run the API with uvicorn until interrupted; 0 after a clean shutdown."""
    limit_malloc_arenas()
    app = create_app(settings)
    json_logs = settings.log.format == "json"
    if json_logs:  # uvicorn's loggers then propagate to the root's JSON handler
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.INFO)
    # Bind first: a busy port fails at once, before the model loads.
    with listen(settings.api.host, settings.api.port) as sock:
        # Load before serving, so a broken model or Qdrant folder surfaces as a clear error
        # and exit code from `cdeq serve` (the lifespan then finds everything loaded).
        prepare(app.state.service)
        config = uvicorn.Config(
            app,
            host=settings.api.host,
            port=settings.api.port,
            access_log=True,  # method, path (no query string) and status: never a key
            server_header=False,
            timeout_graceful_shutdown=30,
            log_config=None if json_logs else _logging_config(),
        )
        # After Config: it (re)configures uvicorn's loggers.
        logging.getLogger("uvicorn.access").addFilter(DropQueryString())
        host = settings.api.host
        shown = f"[{host}]" if ":" in host else host
        logging.getLogger("uvicorn.error").info(
            "cdeq serving on http://%s:%d (docs at /docs)", shown, settings.api.port
        )
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
    return 0 if server.started else 1
