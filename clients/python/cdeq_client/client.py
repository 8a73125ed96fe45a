"""`Client` and `AsyncClient`: every route of a running `cdeq serve`, typed results and errors,
and bounded retries of 429/503 answers (waiting what `Retry-After` asks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import httpx

from cdeq_client import _calls as c
from cdeq_client.errors import JobTimeout
from cdeq_client.types import (
    CollectionInfo,
    ContextInfo,
    Document,
    InputType,
    Job,
    SearchResults,
)

_DOC_SETTINGS = """
    base_url: where `cdeq serve` listens; None reads CDEQ_URL (unset: http://127.0.0.1:8000).
    api_key: sent as `Authorization: Bearer <key>`; None reads CDEQ_API_KEY (unset: no key).
    timeout_s: seconds per request.
    max_retries: how often a 429 or 503 answer is retried before it is raised (0: never).
    backoff_s, max_backoff_s: the wait before retry n is `Retry-After` when the server sends
        one, else backoff_s * 2**n; never more than max_backoff_s (a longer `Retry-After`
        is raised at once).
    embed_batch_size: texts per `/v1/embeddings` request in `embed`.
"""


class Client:
    __doc__ = "A blocking client of one `cdeq serve`.\n" + _DOC_SETTINGS

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        embed_batch_size: int = 256,
    ) -> None:
        self.settings = c.settings(
            base_url,
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            embed_batch_size=embed_batch_size,
        )
        self._http = httpx.Client(
            base_url=self.settings.base_url,
            headers=self.settings.headers,
            timeout=self.settings.timeout_s,
        )

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _send(self, call: c.Call) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    call.method, call.path, json=call.json, params=call.params
                )
            except httpx.TransportError as exc:
                raise c.unreachable(self.settings, call, exc) from exc
            delay = c.retry_delay(self.settings, attempt, response)
            if delay is None:
                return response
            time.sleep(delay)
            attempt += 1

    def _json(self, call: c.Call) -> Any:
        return c.json_of(self._send(call))

    # ---- embeddings ----------------------------------------------------------------------------
    def embed(
        self,
        texts: str | Iterable[str],
        *,
        input_type: InputType = "document",
        collection: str | None = None,
        truncate: bool | None = None,
    ) -> list[list[float]]:
        """Unit vectors of `texts`, in order: as documents or queries, with `collection`'s
        context (None: the generic one). `truncate=False` makes an over-long text a 413."""
        c.check_input_type(input_type)
        items = c.texts_of(texts)
        found: list[list[float]] = []
        for call, count in c.embed_calls(
            items, input_type, collection, truncate, self.settings.embed_batch_size
        ):
            found.extend(c.vectors(self._send(call), count))
        return found

    # ---- documents and jobs --------------------------------------------------------------------
    def ingest(
        self,
        collection: str,
        documents: Iterable[Document | Mapping[str, Any]],
        *,
        wait: bool = False,
        progress: c.Progress = False,
        timeout: float | None = None,
    ) -> Job:
        """Add (or overwrite, by id) documents. Returns the job: queued (with a worker queue)
        unless `wait`, which follows it to the end (`progress`: True prints its counts to
        stderr, or a callable gets each new state)."""
        path = f"/v1/collections/{c.name(collection)}/documents"
        body = self._json(c.Call("POST", path, c.documents_body(documents)))
        job = c.job_of(body, collection)
        if wait:
            return self.wait(job.id, timeout=timeout, progress=progress)
        return job

    def job(self, job_id: str) -> Job:
        return Job.from_dict(self._json(c.Call("GET", f"/v1/jobs/{c.name(job_id, 'job_id')}")))

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_s: float = 0.5,
        progress: c.Progress = False,
    ) -> Job:
        """The job once finished (done, done_with_errors or failed); JobTimeout after
        `timeout` seconds (None: no limit) — the job itself goes on."""
        report = c.reporter(progress)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if report is not None:
                report(job)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(f"job {job_id} not finished after {timeout} s: {job.state}", job)
            time.sleep(poll_s)

    def search(
        self,
        collection: str,
        text: str,
        *,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> SearchResults:
        """The `top_k` documents nearest to the query `text`, with the collection's context;
        `filter` matches payload fields (e.g. {"metadata.lang": "en"}); other keyword options
        go to the route as they are."""
        path = f"/v1/collections/{c.name(collection)}/search"
        body = c.search_body(text, top_k, filter, options)
        return SearchResults.from_dict(self._json(c.Call("POST", path, body)))

    def delete(self, collection: str, ids: Iterable[str]) -> int:
        """Delete documents by id; the number deleted."""
        path = f"/v1/collections/{c.name(collection)}/documents"
        return int(self._json(c.Call("DELETE", path, {"ids": list(ids)}))["deleted"])

    def collections(self) -> list[CollectionInfo]:
        body = self._json(c.Call("GET", "/v1/collections"))
        return [CollectionInfo.from_dict(item) for item in body["data"]]

    def drop_collection(self, collection: str) -> None:
        """Delete a whole collection: every document, version and context."""
        self._json(c.Call("DELETE", f"/v1/collections/{c.name(collection)}"))

    # ---- contexts ------------------------------------------------------------------------------
    def context_show(
        self,
        collection: str,
        *,
        drift: bool = False,
        drift_sample: int | None = None,
        seed: int | None = None,
    ) -> ContextInfo:
        path = f"/v1/collections/{c.name(collection)}/context"
        params = c.context_params(drift, drift_sample, seed)
        return ContextInfo.from_dict(self._json(c.Call("GET", path, params=params)))

    def context_rebuild(
        self,
        collection: str,
        *,
        sample_size: int | None = None,
        seed: int | None = None,
        context_texts: list[str] | None = None,
        wait: bool = False,
        progress: c.Progress = False,
        timeout: float | None = None,
    ) -> Job:
        path = f"/v1/collections/{c.name(collection)}/context/rebuild"
        body = self._json(c.Call("POST", path, c.rebuild_body(sample_size, seed, context_texts)))
        job = c.job_of(body, collection)
        if wait:
            return self.wait(job.id, timeout=timeout, progress=progress)
        return job

    def context_rollback(self, collection: str) -> int:
        """Make the previous kept context live again; its version."""
        path = f"/v1/collections/{c.name(collection)}/context/rollback"
        return int(self._json(c.Call("POST", path))["version"])

    def context_prune(self, collection: str) -> Any:
        """Delete every context version but the live one; what the server removed."""
        path = f"/v1/collections/{c.name(collection)}/context/prune"
        return self._json(c.Call("POST", path))["removed"]


class AsyncClient:
    __doc__ = (
        "The asyncio twin of `Client` (same methods, awaited); close it with `await "
        "aclose()` or `async with`.\n" + _DOC_SETTINGS
    )

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        embed_batch_size: int = 256,
    ) -> None:
        self.settings = c.settings(
            base_url,
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            embed_batch_size=embed_batch_size,
        )
        self._http = httpx.AsyncClient(
            base_url=self.settings.base_url,
            headers=self.settings.headers,
            timeout=self.settings.timeout_s,
        )

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _send(self, call: c.Call) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    call.method, call.path, json=call.json, params=call.params
                )
            except httpx.TransportError as exc:
                raise c.unreachable(self.settings, call, exc) from exc
            delay = c.retry_delay(self.settings, attempt, response)
            if delay is None:
                return response
            await asyncio.sleep(delay)
            attempt += 1

    async def _json(self, call: c.Call) -> Any:
        return c.json_of(await self._send(call))

    async def embed(
        self,
        texts: str | Iterable[str],
        *,
        input_type: InputType = "document",
        collection: str | None = None,
        truncate: bool | None = None,
    ) -> list[list[float]]:
        c.check_input_type(input_type)
        items = c.texts_of(texts)
        found: list[list[float]] = []
        for call, count in c.embed_calls(
            items, input_type, collection, truncate, self.settings.embed_batch_size
        ):
            found.extend(c.vectors(await self._send(call), count))
        return found

    async def ingest(
        self,
        collection: str,
        documents: Iterable[Document | Mapping[str, Any]],
        *,
        wait: bool = False,
        progress: c.Progress = False,
        timeout: float | None = None,
    ) -> Job:
        path = f"/v1/collections/{c.name(collection)}/documents"
        body = await self._json(c.Call("POST", path, c.documents_body(documents)))
        job = c.job_of(body, collection)
        if wait:
            return await self.wait(job.id, timeout=timeout, progress=progress)
        return job

    async def job(self, job_id: str) -> Job:
        body = await self._json(c.Call("GET", f"/v1/jobs/{c.name(job_id, 'job_id')}"))
        return Job.from_dict(body)

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_s: float = 0.5,
        progress: c.Progress = False,
    ) -> Job:
        report = c.reporter(progress)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.job(job_id)
            if report is not None:
                report(job)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(f"job {job_id} not finished after {timeout} s: {job.state}", job)
            await asyncio.sleep(poll_s)

    async def search(
        self,
        collection: str,
        text: str,
        *,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> SearchResults:
        path = f"/v1/collections/{c.name(collection)}/search"
        body = c.search_body(text, top_k, filter, options)
        return SearchResults.from_dict(await self._json(c.Call("POST", path, body)))

    async def delete(self, collection: str, ids: Iterable[str]) -> int:
        path = f"/v1/collections/{c.name(collection)}/documents"
        return int((await self._json(c.Call("DELETE", path, {"ids": list(ids)})))["deleted"])

    async def collections(self) -> list[CollectionInfo]:
        body = await self._json(c.Call("GET", "/v1/collections"))
        return [CollectionInfo.from_dict(item) for item in body["data"]]

    async def drop_collection(self, collection: str) -> None:
        await self._json(c.Call("DELETE", f"/v1/collections/{c.name(collection)}"))

    async def context_show(
        self,
        collection: str,
        *,
        drift: bool = False,
        drift_sample: int | None = None,
        seed: int | None = None,
    ) -> ContextInfo:
        path = f"/v1/collections/{c.name(collection)}/context"
        params = c.context_params(drift, drift_sample, seed)
        return ContextInfo.from_dict(await self._json(c.Call("GET", path, params=params)))

    async def context_rebuild(
        self,
        collection: str,
        *,
        sample_size: int | None = None,
        seed: int | None = None,
        context_texts: list[str] | None = None,
        wait: bool = False,
        progress: c.Progress = False,
        timeout: float | None = None,
    ) -> Job:
        path = f"/v1/collections/{c.name(collection)}/context/rebuild"
        body = await self._json(
            c.Call("POST", path, c.rebuild_body(sample_size, seed, context_texts))
        )
        job = c.job_of(body, collection)
        if wait:
            return await self.wait(job.id, timeout=timeout, progress=progress)
        return job

    async def context_rollback(self, collection: str) -> int:
        path = f"/v1/collections/{c.name(collection)}/context/rollback"
        return int((await self._json(c.Call("POST", path)))["version"])

    async def context_prune(self, collection: str) -> Any:
        path = f"/v1/collections/{c.name(collection)}/context/prune"
        return (await self._json(c.Call("POST", path)))["removed"]
