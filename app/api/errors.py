"""OpenAI-shaped error bodies, and the one place where errors become HTTP statuses.

Every error leaves as ``{"error": {"message", "type", "param", "code"}}``; each error class has
exactly one handler here, and routes never catch errors to turn them into responses.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import (
    CdeqError,
    ContextNotReady,
    DeviceOutOfMemory,
    InputTooLong,
    InvalidInput,
    ModelLoadError,
    NotFound,
    Overloaded,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class ApiError(Exception):
    """An HTTP-only refusal (auth, size, media type) that has no domain error of its own."""

    status = 400
    type = INVALID_REQUEST
    code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})


class Unauthorized(ApiError):
    status = 401
    code = "invalid_api_key"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status = 403
    code = "insufficient_permissions"


class ModelNotFound(ApiError):
    status = 404
    code = "model_not_found"


class PayloadTooLarge(ApiError):
    status = 413
    code = "request_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


def error_body(message: str, type_: str, param: str | None, code: str | None) -> bytes:
    # ensure_ascii: a message can never fail to encode, whatever text it quotes.
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return json.dumps(body, ensure_ascii=True).encode("ascii")


def error_response(
    status: int,
    message: str,
    *,
    type_: str = INVALID_REQUEST,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        error_body(message, type_, param, code),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def param_path(loc: Sequence[Any]) -> str | None:
    """``("body", "documents", 3, "text")`` → ``"documents[3].text"``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "path", "query", "header"):
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or None


# ---- handlers: one per error class --------------------------------------------------------------
async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(
        exc.status, exc.message, type_=exc.type, param=exc.param, code=exc.code, headers=exc.headers
    )


async def _invalid_input(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidInput)
    return error_response(400, str(exc), param=exc.field, code="invalid_value")


async def _input_too_long(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InputTooLong)
    return error_response(413, str(exc), param=exc.field, code="input_too_long")


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    problems = []
    for error in errors[:20]:
        where = param_path(error.get("loc", ())) or "body"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    if len(errors) > 20:
        problems.append(f"… and {len(errors) - 20} more")
    first = errors[0] if errors else {}
    code = "missing_required_parameter" if first.get("type") == "missing" else "invalid_value"
    return error_response(
        400,
        "; ".join(problems) or "invalid request",
        param=param_path(first.get("loc", ())),
        code=code,
    )


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, str(exc), code="not_found")


def _retry_later(
    status: int, type_: str, code: str
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """A handler for errors that carry `retry_after_s` (503 dependency down, 429 overload)."""

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ContextNotReady | StoreUnavailable | Overloaded | DeviceOutOfMemory)
        return error_response(
            status, str(exc), type_=type_, code=code, headers=retry_after(exc.retry_after_s)
        )

    return handler


async def _model_load(request: Request, exc: Exception) -> Response:
    log.error("model unavailable: %s", exc)
    return error_response(
        503, "the model is not available", type_=SERVER_ERROR, code="model_unavailable"
    )


async def _cdeq_error(request: Request, exc: Exception) -> Response:
    # A failure of ours or of a dependency's configuration: logged here, never shown in full.
    log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
    return error_response(
        500, "internal error (see the server log)", type_=SERVER_ERROR, code="internal_error"
    )


_HTTP_CODES = {
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    type_ = SERVER_ERROR if exc.status_code >= 500 else INVALID_REQUEST
    return error_response(
        exc.status_code,
        message,
        type_=type_,
        code=_HTTP_CODES.get(exc.status_code),
        headers=exc.headers,
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Reached through Starlette's ServerErrorMiddleware, which logs the traceback itself.
    return error_response(
        500, "internal error (see the server log)", type_=SERVER_ERROR, code="internal_error"
    )


def install(app: FastAPI) -> None:
    """Register the handlers (most specific classes first for readability; Starlette picks by MRO)."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(InvalidInput, _invalid_input)
    app.add_exception_handler(InputTooLong, _input_too_long)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(ContextNotReady, _retry_later(503, SERVER_ERROR, "context_not_ready"))
    app.add_exception_handler(
        StoreUnavailable, _retry_later(503, SERVER_ERROR, "store_unavailable")
    )
    app.add_exception_handler(Overloaded, _retry_later(429, "rate_limit_error", "overloaded"))
    app.add_exception_handler(
        DeviceOutOfMemory, _retry_later(503, SERVER_ERROR, "device_out_of_memory")
    )
    app.add_exception_handler(ModelLoadError, _model_load)
    app.add_exception_handler(CdeqError, _cdeq_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected)
