"""Request bodies: read strictly (JSON content type, UTF-8, valid JSON, valid Unicode), then
validated by pydantic models in strict mode. Every refusal names the field it is about.

Bodies are parsed here rather than by FastAPI so that authentication runs before any body is
looked at, and so that every malformed body gets a clear 4xx (never a 500).
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.api.errors import UnsupportedMediaType, param_path
from app.errors import InvalidInput

M = TypeVar("M", bound=BaseModel)


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request, plus cdeq's `collection`, `input_type` and `truncate`.

    Unknown fields are ignored, as OpenAI-compatible clients send fields of their own."""

    model_config = ConfigDict(strict=True, extra="ignore")

    input: Any = Field(
        description="a string or a list of strings (token arrays are not accepted)",
        json_schema_extra={
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
        },
    )
    model: str | None = Field(None, description="the served model's name; omit for the default")
    encoding_format: Literal["float", "base64"] | None = Field(
        None, description="'float' (default) or 'base64' (little-endian float32 bytes)"
    )
    dimensions: int | None = Field(None, description="must equal the model's dimension when given")
    user: Any = Field(None, description="accepted and ignored")
    collection: str | None = Field(
        None, description="embed against this collection's context; omit for the generic context"
    )
    input_type: Literal["query", "document"] | None = Field(
        None,
        description="'document' (default) or 'query'; texts starting with 'search_query: ' or "
        "'search_document: ' choose for themselves",
    )
    truncate: bool | None = Field(
        None,
        description="true (default): cut inputs at the model's token limit; false: 413 instead",
    )


class DocumentsRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    documents: list[Any] = Field(description='[{"id": str, "text": str, "metadata"?: object}, …]')


class SearchRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    text: str
    top_k: int = Field(10, description="documents to return (chunks with group false)")
    filter: dict[str, Any] | None = Field(None, description='e.g. {"metadata.lang": "en"}')
    mode: str | None = Field(
        None,
        description="'dense', 'sparse' or 'hybrid' (docs/search-modes.md); default: "
        "CDEQ_SEARCH__MODE",
    )
    group: bool = Field(
        True,
        description="true: one hit per document, its best chunk; false: the best chunks",
    )


class DeleteRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    ids: list[Any] = Field(description="document ids (strings; integers are taken as strings)")

    def document_ids(self) -> list[str]:
        for i, value in enumerate(self.ids):
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise InvalidInput(
                    f"ids[{i}]: must be a string, got {_json_type(value)}", field=f"ids[{i}]"
                )
        return [str(value) for value in self.ids]


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """The `openapi_extra` that documents a body parsed by `read_body` (flat models only)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as infinity, which JSON cannot carry back
        raise ValueError(f"number {text[:40]} is out of range")
    return value


MAX_DEPTH = 32


def _check_tree(value: Any) -> None:
    """Refuse strings (or keys) that are not valid Unicode (lone surrogates), and nesting deeper
    than MAX_DEPTH (which would only exhaust the stack of code further down)."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:  # iterative: nesting depth must not matter here
        loc, item = stack.pop()
        if len(loc) > MAX_DEPTH:
            raise InvalidInput(
                f"{param_path(loc[:MAX_DEPTH])}: JSON nested deeper than {MAX_DEPTH} levels",
                field=param_path(loc[:MAX_DEPTH]),
            )
        if isinstance(item, str):
            _check_text(item, loc)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(key, loc, key=True)
                stack.append(((*loc, key), child))
        elif isinstance(item, list):
            stack.extend(((*loc, i), child) for i, child in enumerate(item))


def _check_text(text: str, loc: tuple[str | int, ...], *, key: bool = False) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        where = param_path(loc)
        what = f"a key of {where or 'the body'}" if key else (where or "the body")
        raise InvalidInput(
            f"{what}: contains a lone surrogate escape (\\ud800-\\udfff), which is not valid Unicode",
            field=where,
        ) from None


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_json(request: Request) -> Any:
    """The request body as JSON, or a 4xx that says what is wrong with it. Parsed once per
    request: the scope check (`app.api.auth`) may have read it before the route."""
    if hasattr(request.state, "json_body"):
        return request.state.json_body
    # A JSON content type is required: a browser page cannot send one cross-site without a
    # CORS preflight, so an open local server cannot be driven by a web page the user visits.
    if not _is_json(request.headers.get("content-type")):
        raise UnsupportedMediaType(
            "send the body as JSON with the header 'Content-Type: application/json'"
        )
    raw = await request.body()
    if not raw.strip():
        raise InvalidInput("the request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"the request body is not valid UTF-8 (bad byte at offset {exc.start})"
        ) from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"the request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:  # NaN/Infinity, huge integers, absurd nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InvalidInput(f"the request body is not valid JSON: {reason}") from None
    _check_tree(value)
    request.state.json_body = value
    return value


async def read_body(request: Request, model: type[M]) -> M:
    """Read and validate the body as ``model``; schema errors go to the RequestValidationError handler."""
    value = await read_json(request)
    if not isinstance(value, dict):
        raise InvalidInput(f"the request body must be a JSON object, got {_json_type(value)}")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"
