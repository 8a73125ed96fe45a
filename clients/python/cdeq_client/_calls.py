"""What sync and async clients share: settings checks, the requests each method sends, how
answers are read, and the retry policy (429 and 503, honouring Retry-After)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from cdeq_client.errors import CdeqAPIError, CdeqConnectionError, api_error, retry_after
from cdeq_client.types import Document, InputType, Job

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = frozenset({429, 503})

Progress = bool | Callable[[Job], None]


@dataclass(frozen=True)
class Settings:
    base_url: str
    headers: dict[str, str]
    timeout_s: float
    max_retries: int
    backoff_s: float
    max_backoff_s: float
    embed_batch_size: int


def settings(
    base_url: str | None,
    *,
    api_key: str | None,
    timeout_s: float,
    max_retries: int,
    backoff_s: float,
    max_backoff_s: float,
    embed_batch_size: int,
    batch_field: str = "embed_batch_size",
) -> Settings:
    """Checked settings; ValueError naming the one that is wrong. `base_url` None reads the
    environment variable CDEQ_URL (unset: DEFAULT_URL); `api_key` None reads CDEQ_API_KEY
    (unset: no key sent)."""
    if base_url is None:
        base_url = os.environ.get("CDEQ_URL") or DEFAULT_URL
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url: must start with http:// or https://, got {base_url!r}")
    _positive_int(batch_field, embed_batch_size, minimum=1)
    _positive_int("max_retries", max_retries, minimum=0)
    _seconds("timeout_s", timeout_s, zero_ok=False)
    _seconds("backoff_s", backoff_s, zero_ok=True)
    _seconds("max_backoff_s", max_backoff_s, zero_ok=True)
    key = api_key if api_key is not None else os.environ.get("CDEQ_API_KEY") or None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return Settings(
        base_url.rstrip("/"),
        headers,
        float(timeout_s),
        max_retries,
        float(backoff_s),
        float(max_backoff_s),
        embed_batch_size,
    )


def _positive_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: must be an integer of at least {minimum}, got {value!r}")


def _seconds(name: str, value: object, *, zero_ok: bool) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < 0
        or (value == 0 and not zero_ok)
    ):
        above = "0 or more" if zero_ok else "above 0"
        raise ValueError(f"{name}: must be a number of seconds {above}, got {value!r}")


@dataclass(frozen=True)
class Call:
    """One request: method, path under the base URL, JSON body and query parameters."""

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None


def name(value: str, field: str = "collection") -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field}: must be a non-empty string, got {value!r}")
    return quote(value, safe="")


def retry_delay(s: Settings, attempt: int, response: httpx.Response) -> float | None:
    """Seconds to wait before retrying `response`, or None to surface it: not a 429/503, the
    retries are spent, or the server asks for a longer wait than `max_backoff_s`."""
    if response.status_code not in RETRY_STATUSES or attempt >= s.max_retries:
        return None
    asked = retry_after(response)
    if asked is not None:
        return asked if asked <= s.max_backoff_s else None
    return min(s.backoff_s * 2**attempt, s.max_backoff_s)


def unreachable(s: Settings, call: Call, exc: httpx.TransportError) -> CdeqConnectionError:
    return CdeqConnectionError(
        f"cannot reach cdeq at {s.base_url}{call.path}: {type(exc).__name__}: {exc}"
    )


def json_of(response: httpx.Response) -> Any:
    """The JSON of a success answer; CdeqAPIError for anything else."""
    if response.status_code >= 400:
        raise api_error(response)
    try:
        return response.json()
    except ValueError:
        raise CdeqAPIError(
            response.status_code, f"not a JSON answer: {response.text[:200]!r}"
        ) from None


# ---- embeddings --------------------------------------------------------------------------------
def texts_of(texts: str | Iterable[str]) -> list[str]:
    items = [texts] if isinstance(texts, str) else list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}]: must be a string, got {type(text).__name__}")
    return items


def check_input_type(input_type: str) -> None:
    if input_type not in ("query", "document"):
        raise ValueError(f"input_type: must be 'query' or 'document', got {input_type!r}")


def embed_calls(
    texts: list[str],
    input_type: InputType,
    collection: str | None,
    truncate: bool | None,
    batch_size: int,
) -> Iterator[tuple[Call, int]]:
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        body: dict[str, Any] = {"input": batch, "input_type": input_type}
        if collection is not None:
            body["collection"] = collection
        if truncate is not None:
            body["truncate"] = truncate
        yield Call("POST", "/v1/embeddings", body), len(batch)


def vectors(response: httpx.Response, expected: int) -> list[list[float]]:
    """The embeddings of a 200 answer, in input order; CdeqAPIError for anything else."""
    if response.status_code != 200:
        raise api_error(response)
    try:
        data = sorted(response.json()["data"], key=lambda d: d["index"])
        found = [list(d["embedding"]) for d in data]
    except (ValueError, KeyError, TypeError) as exc:
        raise CdeqAPIError(
            200, f"not an embeddings answer ({type(exc).__name__}): {response.text[:200]}"
        ) from None
    if len(found) != expected:
        raise CdeqAPIError(200, f"{len(found)} embeddings for {expected} texts")
    return found


# ---- collections and jobs ----------------------------------------------------------------------
def documents_body(documents: Iterable[Document | Mapping[str, Any]]) -> dict[str, Any]:
    items: list[Any] = []
    for doc in documents:
        items.append(doc.to_dict() if isinstance(doc, Document) else dict(doc))
    return {"documents": items}


def job_of(body: Mapping[str, Any], collection: str) -> Job:
    """A 202's `{"job_id"}` (queued) or a 200's finished job (in-process server)."""
    if "id" in body:
        return Job.from_dict(body)
    return Job(id=str(body["job_id"]), collection=collection, state="queued", raw=dict(body))


def search_body(
    text: str, top_k: int, filter: Mapping[str, Any] | None, options: Mapping[str, Any]
) -> dict[str, Any]:
    body: dict[str, Any] = {"text": text, "top_k": top_k}
    if filter is not None:
        body["filter"] = dict(filter)
    body.update(options)  # options other branches of the API add (mode, group, …) pass through
    return body


def rebuild_body(
    sample_size: int | None, seed: int | None, context_texts: list[str] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if sample_size is not None:
        body["sample_size"] = sample_size
    if seed is not None:
        body["seed"] = seed
    if context_texts is not None:
        body["context_texts"] = list(context_texts)
    return body


def context_params(drift: bool, drift_sample: int | None, seed: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if drift:
        params["drift"] = "true"
    if drift_sample is not None:
        params["drift_sample"] = drift_sample
    if seed is not None:
        params["seed"] = seed
    return params


def reporter(progress: Progress) -> Callable[[Job], None] | None:
    """What `wait` calls with each new state of the job: None, a callable, or (True) a line on
    stderr whenever the counts change."""
    if callable(progress):
        return progress
    if not progress:
        return None
    last: list[tuple[str, int, int]] = []

    def show(job: Job) -> None:
        now = (job.state, job.succeeded, job.failed)
        if last and last[0] == now:
            return
        last[:] = [now]
        failed = f", {job.failed} failed" if job.failed else ""
        print(
            f"job {job.id} ({job.collection}): {job.state}, "
            f"{job.succeeded + job.failed}/{job.total} documents{failed}",
            file=sys.stderr,
            flush=True,
        )

    return show
