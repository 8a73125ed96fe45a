"""Text Embeddings Inference (TEI) conventions: `POST /embed` (also at `POST /`, where
`huggingface_hub.InferenceClient(base_url=…)` posts), `GET /info` and `GET /health`, so clients
written for a TEI server (e.g. LangChain's `HuggingFaceEndpointEmbeddings`) work with cdeq.

`/embed` takes `{"inputs": str | [str], "truncate"?, "normalize"?, "prompt_name"?}` and answers
a list of vectors, as TEI does; `prompt_name` "query" embeds queries, "document" or "passage"
documents. cdeq's `input_type` and `collection` are accepted too. Errors keep cdeq's (OpenAI)
shape.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

import app as package
from app.api.auth import ReadAccess
from app.api.embeddings import request_texts
from app.api.errors import SERVER_ERROR, error_response
from app.api.schemas import openapi_body, read_body
from app.config import ApiSettings
from app.embeddings import InputType, embed_texts, input_types
from app.errors import InvalidInput
from app.service import Cdeq

router = APIRouter()


class EmbedRequest(BaseModel):
    """TEI's /embed body, plus cdeq's `input_type` and `collection`. Unknown fields are ignored
    (TEI clients send some of their own)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    inputs: Any = Field(
        description="a string or a list of strings",
        json_schema_extra={
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
        },
    )
    truncate: bool | None = Field(
        None, description="false (default, as TEI): an input over 512 tokens is a 413; true: cut it"
    )
    normalize: bool | None = Field(
        None, description="true (default): unit-length vectors, the only kind cdeq makes"
    )
    input_type: Literal["query", "document"] | None = Field(
        None, description="'document' (default) or 'query'; prefixed texts choose for themselves"
    )
    collection: str | None = Field(
        None, description="embed against this collection's context; omit for the generic one"
    )
    prompt_name: str | None = Field(
        None,
        description="TEI's prompt: 'query' embeds queries; 'document' or 'passage' documents",
    )


PROMPT_NAMES = {"query": "query", "document": "document", "passage": "document"}


def requested_type(req: EmbedRequest) -> InputType:
    """The input type asked for by `input_type` or TEI's `prompt_name` (default: document);
    InvalidInput for an unknown prompt name, or two fields that disagree."""
    chosen = InputType(req.input_type) if req.input_type is not None else None
    if req.prompt_name is not None:
        mapped = PROMPT_NAMES.get(req.prompt_name)
        if mapped is None:
            accepted = ", ".join(repr(name) for name in PROMPT_NAMES)
            raise InvalidInput(
                f"prompt_name: {req.prompt_name!r} is not a prompt of this model; accepted: "
                f"{accepted} (or omit it)",
                field="prompt_name",
            )
        if chosen is not None and chosen != InputType(mapped):
            raise InvalidInput(
                f"prompt_name: {req.prompt_name!r} asks for {mapped} embeddings but input_type "
                f"is {req.input_type!r}; send one of them",
                field="prompt_name",
            )
        chosen = InputType(mapped)
    return chosen or InputType.DOCUMENT


@router.post(
    "/",
    dependencies=[ReadAccess],
    openapi_extra=openapi_body(EmbedRequest),
    summary="Embed texts: the same as POST /embed (TEI serves it at / too)",
)
@router.post(
    "/embed",
    dependencies=[ReadAccess],
    openapi_extra=openapi_body(EmbedRequest),
    summary="Embed texts (Text Embeddings Inference-compatible)",
)
async def embed(request: Request) -> Response:
    service: Cdeq = request.app.state.service
    api: ApiSettings = request.app.state.api
    req = await read_body(request, EmbedRequest)
    if req.normalize is False:
        raise InvalidInput(
            "normalize: false is not supported; cdeq's vectors are always unit length "
            "(omit normalize or send true)",
            field="normalize",
        )
    raw = request_texts(req.inputs, api.max_inputs, field="inputs")
    texts, types = input_types(raw, requested_type(req), field="inputs")
    result = await run_in_threadpool(
        lambda: embed_texts(
            texts,
            types,
            service=service,
            collection=req.collection,
            truncate=bool(req.truncate),
            field="inputs",
        )
    )
    for kind, count in result.tokens_by_type(types).items():
        request.app.state.metrics.tokens.labels(str(kind)).inc(count)
    body = json.dumps([v.tolist() for v in result.vectors], separators=(",", ":"))
    return Response(body.encode("ascii"), media_type="application/json")


@router.get("/info", dependencies=[ReadAccess], summary="The served model (TEI-compatible)")
async def info(request: Request) -> dict[str, Any]:
    service: Cdeq = request.app.state.service
    api: ApiSettings = request.app.state.api
    embedder = service.serve_model()
    return {
        "model_id": request.app.state.model_name,
        "model_path": embedder.model_id,
        "model_sha": None,
        "model_dtype": str(embedder.dtype).removeprefix("torch."),
        "model_type": {"embedding": {"pooling": "mean"}},
        "device": str(embedder.device),
        "dim": embedder.dim,
        "context_size": embedder.context_size,
        "max_input_length": embedder.max_seq_length,
        "token_budget": embedder.token_budget,
        "max_batch_tokens": embedder.max_batch_tokens,
        "max_batch_requests": embedder.max_batch,
        "max_client_batch_size": api.max_inputs,
        "max_queue_tokens": embedder.max_queue_tokens,
        "batching": embedder.batching,
        "version": package.__version__,
    }


@router.get("/health", summary="200 when the model is loaded, else 503 (TEI-compatible; no key)")
async def health(request: Request) -> Response:
    service: Cdeq = request.app.state.service
    if service.has("embedder"):
        return Response(status_code=200)
    return error_response(
        503,
        "the model is not loaded",
        type_=SERVER_ERROR,
        code="model_unavailable",
        headers={"Retry-After": "5"},
    )
