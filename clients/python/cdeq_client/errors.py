"""The errors the client raises: one per kind of answer, each carrying the HTTP status, cdeq's
error code and message (cdeq's bodies are OpenAI's shape: {"error": {"message", "code", ...}})."""

from __future__ import annotations

from typing import Any

import httpx


class CdeqAPIError(ValueError):
    """cdeq answered something other than success (or an answer the client cannot read).

    A ValueError, as the framework adapters raised before this package existed."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        *,
        param: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s
        where = f"{status} ({code})" if code else str(status)
        super().__init__(f"cdeq answered {where}: {message}")

    @property
    def status_code(self) -> int:
        return self.status


class BadRequest(CdeqAPIError):
    """400: a field is wrong; `param` names it."""


class AuthenticationError(CdeqAPIError):
    """401: no API key, or one the server does not know."""


class PermissionDenied(CdeqAPIError):
    """403: the key may not do this (e.g. a read-only key on a write route)."""


class NotFound(CdeqAPIError):
    """404: no such collection, job, model or route."""


class Conflict(CdeqAPIError):
    """409: the state forbids it now (e.g. a rebuild already running, another model's context)."""


class PayloadTooLarge(CdeqAPIError):
    """413: the request body, or an input with `truncate` off, is over the server's limit."""


class RateLimited(CdeqAPIError):
    """429: the server is full; the client retried (see `max_retries`) and it stayed full."""


class ServiceUnavailable(CdeqAPIError):
    """503: a dependency (Qdrant, Redis, the model, a context being built) is not ready."""


class ServerError(CdeqAPIError):
    """Any other 5xx."""


class CdeqConnectionError(ConnectionError):
    """The server could not be reached (refused, timed out, broken connection)."""


class JobTimeout(TimeoutError):
    """`wait` gave up before the job finished; the job goes on, `job` holds its last state."""

    def __init__(self, message: str, job: Any) -> None:
        super().__init__(message)
        self.job = job


_BY_STATUS: dict[int, type[CdeqAPIError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
    503: ServiceUnavailable,
}


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a `Retry-After: <seconds>` header (cdeq never sends the date form)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def api_error(response: httpx.Response) -> CdeqAPIError:
    """The typed error of a non-success answer; a proxy's body (not cdeq's shape) is quoted."""
    status = response.status_code
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else CdeqAPIError)
    wait = retry_after(response)
    try:
        error = response.json()["error"]
        return cls(
            status,
            str(error["message"]),
            error.get("code"),
            param=error.get("param"),
            retry_after_s=wait,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        text = response.text[:500] or response.reason_phrase
        return cls(status, text, retry_after_s=wait)
