"""POST /v1/embeddings: OpenAI's embeddings endpoint over cde-small-v1 contexts.

Without `collection` the generic context is used; with it, the collection's own (the one its
documents were embedded with). Texts that already start with `search_query: ` or
`search_document: ` choose query or document embedding themselves; the others follow
`input_type` (default document).
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
from app.names import check_collection_name
from app.errors import InvalidInput
from app.model import DOCUMENT_PREFIX, QUERY_PREFIX
from app.service import Cdeq

router = APIRouter()

Kind = Literal["query", "document"]
_PREFIXES: tuple[tuple[str, Kind], ...] = ((QUERY_PREFIX, "query"), (DOCUMENT_PREFIX, "document"))


@dataclass(frozen=True)
class Plan:
    """A validated embeddings request: texts without their prefixes, and how to embed each."""

    texts: list[str]
    kinds: list[Kind]
    collection: str | None
    encoding: Literal["float", "base64"]
    truncate: bool


@dataclass(frozen=True)
class Result:
    body: bytes
    tokens: dict[Kind, int]


def _texts(value: Any, max_inputs: int) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise InvalidInput("input: must be a string or a list of strings", field="input")
    if not value:
        raise InvalidInput("input: empty list; give at least one text", field="input")
    if len(value) > max_inputs:
        raise PayloadTooLarge(
            f"input: {len(value)} texts, more than the limit of {max_inputs} per request",
            param="input", code="too_many_inputs",
        )  # fmt: skip
    for i, item in enumerate(value):
        if isinstance(item, int | list) and not isinstance(item, bool):
            where = "input" if isinstance(item, int) else f"input[{i}]"
            raise InvalidInput(
                f"{where}: token arrays are not accepted; this server embeds text only (send a "
                "string or a list of strings)",
                field=where,
            )
        if not isinstance(item, str):
            raise InvalidInput(
                f"input[{i}]: must be a string, got {type(item).__name__}", field=f"input[{i}]"
            )
    return list(value)


def plan(req: EmbeddingsRequest, api: ApiSettings, *, model_names: set[str], dim: int) -> Plan:
    """Check everything that can be checked without the model; raise the matching 4xx."""
    if req.model is not None and req.model not in model_names:
        raise ModelNotFound(
            f"model {req.model!r} is not served here; use {api.model_name!r}", param="model"
        )
    if req.dimensions is not None and req.dimensions != dim:
        raise InvalidInput(
            f"dimensions: this model gives {dim}-dimensional vectors; omit dimensions or send {dim}",
            field="dimensions",
        )
    if req.collection is not None:
        check_collection_name(req.collection)
    default: Kind = req.input_type or "document"
    texts: list[str] = []
    kinds: list[Kind] = []
    for i, raw in enumerate(_texts(req.input, api.max_inputs)):
        kind = default
        text = raw
        for prefix, prefix_kind in _PREFIXES:
            if raw.startswith(prefix):
                text, kind = raw[len(prefix) :], prefix_kind  # the model adds the prefix back
                break
        if not text.strip():
            raise InvalidInput(f"input[{i}]: empty or whitespace-only text", field=f"input[{i}]")
        texts.append(text)
        kinds.append(kind)
    return Plan(
        texts=texts, kinds=kinds, collection=req.collection,
        encoding=req.encoding_format or "float", truncate=True if req.truncate is None else req.truncate,
    )  # fmt: skip


def embed(service: Cdeq, job: Plan, model_name: str) -> Result:
    """The blocking part (context, tokenizer, forward passes, JSON); runs in a worker thread."""
    embedder = service.embedder
    if job.collection is not None:
        dataset = service.contexts.current(job.collection).dataset_embeddings
    else:
        dataset = service.contexts.generic()
    groups: dict[Kind, list[int]] = {"query": [], "document": []}
    for i, kind in enumerate(job.kinds):
        groups[kind].append(i)
    if not job.truncate:
        for kind, indices in groups.items():
            prefix = QUERY_PREFIX if kind == "query" else DOCUMENT_PREFIX
            _, cut = (
                embedder.tokenize([job.texts[i] for i in indices], prefix) if indices else ([], [])
            )
            for i, was_cut in zip(indices, cut, strict=True):
                if was_cut:
                    raise PayloadTooLarge(
                        f"input[{i}]: longer than the model's limit of {embedder.max_seq_length} "
                        "tokens (prefix included); shorten it, or send truncate: true to embed "
                        "its beginning",
                        param=f"input[{i}]", code="input_too_long",
                    )  # fmt: skip
    vectors = np.empty((len(job.texts), embedder.dim), dtype=np.float32)
    tokens = [0] * len(job.texts)
    truncated = [False] * len(job.texts)
    used: dict[Kind, int] = {}
    for kind, indices in groups.items():
        if not indices:
            continue
        run = embedder.embed_queries if kind == "query" else embedder.embed_documents
        out = run([job.texts[i] for i in indices], dataset)
        vectors[indices] = out.vectors
        for row, i in enumerate(indices):
            tokens[i] = out.token_counts[row]
            truncated[i] = out.truncated[row]
        used[kind] = sum(out.token_counts)
    data: list[dict[str, Any]] = []
    for i, vector in enumerate(vectors):
        item: dict[str, Any] = {
            "object": "embedding",
            "index": i,
            "embedding": _encode(vector, job.encoding),
        }
        if truncated[i]:
            item["truncated"] = True
        data.append(item)
    total = sum(tokens)
    body = {
        "object": "list", "data": data, "model": model_name,
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }  # fmt: skip
    return Result(json.dumps(body, separators=(",", ":")).encode("utf-8"), used)


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
    job = plan(req, api, model_names=request.app.state.model_names, dim=service.embedder.dim)
    async with request.app.state.in_flight.slot():
        result = await run_in_threadpool(
            embed, service, job, api.model_name
        )
    for kind, count in result.tokens.items():
        request.app.state.metrics.tokens.labels(kind).inc(count)
    return Response(result.body, media_type="application/json")
