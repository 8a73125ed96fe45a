"""POST /v1/embeddings: OpenAI's embeddings protocol over `app.embeddings`.

This module parses and checks the request (what needs no model), calls the use case in a
worker thread (which waits for its rows from the model server), and writes the OpenAI-shaped
JSON.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.auth import ReadAccess
from app.api.errors import ModelNotFound, PayloadTooLarge
from app.api.schemas import EmbeddingsRequest, openapi_body, read_body
from app.config import ApiSettings
from app.embeddings import EmbeddedTexts, InputType, embed_texts, input_types
from app.errors import InvalidInput
from app.service import Cdeq

router = APIRouter()


@dataclass(frozen=True)
class Plan:
    """A checked embeddings request: texts without their prefixes, and how to embed each."""

    texts: list[str]
    types: list[InputType]
    collection: str | None
    encoding: Literal["float", "base64"]
    truncate: bool


def request_texts(value: Any, max_inputs: int, field: str = "input") -> list[str]:
    """The texts of an `input` (or TEI `inputs`) field: a string or a list of strings."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise InvalidInput(f"{field}: must be a string or a list of strings", field=field)
    if not value:
        raise InvalidInput(f"{field}: empty list; give at least one text", field=field)
    if len(value) > max_inputs:
        raise PayloadTooLarge(
            f"{field}: {len(value)} texts, more than the limit of {max_inputs} per request",
            param=field,
            code="too_many_inputs",
        )
    for i, item in enumerate(value):
        if isinstance(item, int | list) and not isinstance(item, bool):
            where = field if isinstance(item, int) else f"{field}[{i}]"
            raise InvalidInput(
                f"{where}: token arrays are not accepted; this server embeds text only (send a "
                "string or a list of strings)",
                field=where,
            )
        if not isinstance(item, str):
            raise InvalidInput(
                f"{field}[{i}]: must be a string, got {type(item).__name__}",
                field=f"{field}[{i}]",
            )
    return list(value)


def plan(
    req: EmbeddingsRequest, api: ApiSettings, *, model_name: str, model_names: set[str], dim: int
) -> Plan:
    """Check everything that can be checked without the model; raise the matching 4xx."""
    if req.model is not None and req.model not in model_names:
        raise ModelNotFound(
            f"model {req.model!r} is not served here; use {model_name!r}", param="model"
        )
    if req.dimensions is not None and req.dimensions != dim:
        raise InvalidInput(
            f"dimensions: this model gives {dim}-dimensional vectors; omit dimensions or send {dim}",
            field="dimensions",
        )
    default = InputType(req.input_type or "document")
    texts, types = input_types(request_texts(req.input, api.max_inputs), default)
    return Plan(
        texts=texts,
        types=types,
        collection=req.collection,
        encoding=req.encoding_format or "float",
        truncate=True if req.truncate is None else req.truncate,
    )


def render(result: EmbeddedTexts, encoding: str, model_name: str) -> bytes:
    """The OpenAI response body (a truncated text is flagged with "truncated": true)."""
    data: list[dict[str, Any]] = []
    for i, vector in enumerate(result.vectors):
        item: dict[str, Any] = {
            "object": "embedding",
            "index": i,
            "embedding": _encode(vector, encoding),
        }
        if result.truncated[i]:
            item["truncated"] = True
        data.append(item)
    total = sum(result.token_counts)
    body = {
        "object": "list",
        "data": data,
        "model": model_name,
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":  # as OpenAI: the raw little-endian float32 bytes
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


@router.post(
    "/v1/embeddings",
    dependencies=[ReadAccess],
    openapi_extra=openapi_body(EmbeddingsRequest),
    summary="Create embeddings (OpenAI-compatible)",
)
async def create_embeddings(request: Request) -> Response:
    service: Cdeq = request.app.state.service
    api: ApiSettings = request.app.state.api
    req = await read_body(request, EmbeddingsRequest)
    job = plan(
        req,
        api,
        model_name=request.app.state.model_name,
        model_names=request.app.state.model_names,
        dim=service.embedder.dim,
    )
    result = await run_in_threadpool(
        lambda: embed_texts(
            job.texts,
            job.types,
            service=service,
            collection=job.collection,
            truncate=job.truncate,
        )
    )
    for kind, count in result.tokens_by_type(job.types).items():
        request.app.state.metrics.tokens.labels(str(kind)).inc(count)
    body = render(result, job.encoding, request.app.state.model_name)
    return Response(body, media_type="application/json")
