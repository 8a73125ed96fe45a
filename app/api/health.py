"""Probes and metrics (open, no key): /healthz (process up), /readyz (model loaded, Redis and
Qdrant reachable), /metrics (Prometheus text). Also /v1/models and /v1/models/{id}, as OpenAI
clients expect."""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from app.api.auth import ReadAccess
from app.api.errors import SERVER_ERROR, ModelNotFound
from app.errors import CdeqError
from app.service import Cdeq

log = logging.getLogger(__name__)
router = APIRouter()


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _checks(service: Cdeq) -> dict[str, str]:
    """'ok' or why not, per dependency; blocking (runs in a worker thread)."""
    from migrations import LATEST_SCHEMA

    checks: dict[str, str] = {}
    checks["model"] = "ok" if service.has("embedder") else "not loaded"
    if service.queued:
        try:
            service.redis.ping()  # type: ignore[union-attr]
            checks["redis"] = "ok"
        except redis.RedisError as exc:
            checks["redis"] = f"unreachable: {type(exc).__name__}"
    else:
        checks["redis"] = "not used (in-process mode)"
    try:
        version = service.store.schema_version()
        checks["qdrant"] = (
            "ok"
            if version >= LATEST_SCHEMA
            else (f"schema version {version} < {LATEST_SCHEMA}: run `cdeq migrate`")
        )
    except CdeqError as exc:
        checks["qdrant"] = f"unreachable: {type(exc).__name__}"
        log.warning("readiness: Qdrant check failed: %s", exc)
    return checks


_OK = ("ok", "not used (in-process mode)")


@router.get("/readyz", summary="Ready to serve: model loaded, Redis and Qdrant reachable")
async def readyz(request: Request) -> Response:
    checks = await run_in_threadpool(_checks, request.app.state.service)
    failed = {name: state for name, state in checks.items() if state not in _OK}
    if not failed:
        return Response(_json({"status": "ready", "checks": checks}), media_type="application/json")
    message = "not ready: " + "; ".join(f"{name}: {state}" for name, state in failed.items())
    body = {  # the OpenAI error shape, plus every check
        "error": {"message": message, "type": SERVER_ERROR, "param": None, "code": "not_ready"},
        "checks": checks,
    }
    return Response(
        _json(body), status_code=503, media_type="application/json", headers={"Retry-After": "5"}
    )


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode("ascii")


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(request.app.state.metrics.render)  # reads Redis: off the loop
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "cdeq"}


@router.get("/v1/models", dependencies=[ReadAccess], summary="The served model (OpenAI-compatible)")
async def models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [_model(request.app.state.model_name)]}


@router.get(
    "/v1/models/{model_id:path}",
    dependencies=[ReadAccess],
    summary="One model by name (OpenAI-compatible: `client.models.retrieve`)",
)
async def model(model_id: str, request: Request) -> dict[str, Any]:
    """The served model under any name `/v1/embeddings` accepts for it (the API name or the
    configured checkpoint); any other name is 404 `model_not_found`."""
    if model_id not in request.app.state.model_names:
        raise ModelNotFound(
            f"model {model_id!r} is not served here; use {request.app.state.model_name!r}",
            param="model",
        )
    return _model(model_id)
