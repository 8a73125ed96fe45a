"""The HTTP calls the framework adapters share: `POST /v1/embeddings` with cdeq's `input_type`
and `collection`, in batches, sync or async, and one clear error for every answer but 200.

A client only: it imports httpx, never cdeq's server code (tests/unit/test_architecture.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import httpx

InputType = Literal["query", "document"]


class CdeqAPIError(ValueError):
    """cdeq answered something other than 200 (or an answer that is not embeddings)."""

    def __init__(self, status_code: int, message: str, code: str | None = None) -> None:
        self.status_code = status_code
        self.code = code
        self.message = message
        where = f"{status_code} ({code})" if code else str(status_code)
        super().__init__(f"cdeq answered {where}: {message}")


def check_settings(
    base_url: str, batch_size: int, timeout_s: float, *, batch_field: str = "batch_size"
) -> str:
    """``base_url`` without its trailing slash; ValueError naming the setting that is wrong."""
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url: must start with http:// or https://, got {base_url!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{batch_field}: must be an integer of at least 1, got {batch_size!r}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
        raise ValueError(f"timeout_s: must be a number of seconds above 0, got {timeout_s!r}")
    return base_url.rstrip("/")


class CdeqHTTP:
    """Connection settings for one `cdeq serve`; `embed`/`aembed` take what may change per call."""

    def __init__(self, base_url: str, *, api_key: str | None, timeout_s: float) -> None:
        self.url = f"{base_url.rstrip('/')}/v1/embeddings"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout_s
        self._client = httpx.Client(timeout=timeout_s, headers=self._headers)

    def embed(
        self, texts: list[str], input_type: InputType, *, collection: str | None, batch_size: int
    ) -> list[list[float]]:
        vectors: list[list[float]] = []
        for batch in _batches(texts, batch_size):
            body = _body(batch, input_type, collection)
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from exc
            vectors.extend(_vectors(response, len(batch)))
        return vectors

    async def aembed(
        self, texts: list[str], input_type: InputType, *, collection: str | None, batch_size: int
    ) -> list[list[float]]:
        vectors: list[list[float]] = []
        if not texts:
            return vectors
        # One AsyncClient per call: a pooled one would outlive the event loop that made it
        # (each asyncio.run has its own), and its connections would then fail.
        async with httpx.AsyncClient(timeout=self._timeout, headers=self._headers) as client:
            for batch in _batches(texts, batch_size):
                body = _body(batch, input_type, collection)
                try:
                    response = await client.post(self.url, json=body)
                except httpx.TransportError as exc:
                    raise self._unreachable(exc) from exc
                vectors.extend(_vectors(response, len(batch)))
        return vectors

    def _unreachable(self, exc: httpx.TransportError) -> ConnectionError:
        return ConnectionError(f"cannot reach cdeq at {self.url}: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._client.close()


def _batches(texts: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(texts), size):
        yield texts[start : start + size]


def _body(texts: list[str], input_type: InputType, collection: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"input": texts, "input_type": input_type}
    if collection is not None:
        body["collection"] = collection
    return body


def _vectors(response: httpx.Response, expected: int) -> list[list[float]]:
    """The embeddings of a 200 answer, in input order; CdeqAPIError for anything else."""
    if response.status_code != 200:
        raise _api_error(response)
    try:
        data = sorted(response.json()["data"], key=lambda d: d["index"])
        vectors = [list(d["embedding"]) for d in data]
    except (ValueError, KeyError, TypeError) as exc:
        raise CdeqAPIError(
            200, f"not an embeddings answer ({type(exc).__name__}): {response.text[:200]}"
        ) from None
    if len(vectors) != expected:
        raise CdeqAPIError(200, f"{len(vectors)} embeddings for {expected} texts")
    return vectors


def _api_error(response: httpx.Response) -> CdeqAPIError:
    """cdeq's errors are OpenAI's shape, {"error": {"message", "code", ...}}; a proxy's may not be."""
    try:
        error = response.json()["error"]
        return CdeqAPIError(response.status_code, str(error["message"]), error.get("code"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return CdeqAPIError(response.status_code, response.text[:500] or response.reason_phrase)
