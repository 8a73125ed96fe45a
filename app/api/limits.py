"""Request limits: the body size (checked on Content-Length and counted while reading), and
the bounded number of queued ingest requests being validated and queued (over it → 429).

The bound on embedding work (429 when full) is the model server's queue, in `app.serving`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import PayloadTooLarge, error_response
from app.errors import Overloaded


class BodyLimit:
    """ASGI middleware: refuses a body over ``max_bytes`` with 413 before the app sees it.

    The body is read here (counting bytes, whatever Content-Length claims) and handed to the
    app in one piece, so no route can be reached by a body over the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, f"Content-Length {declared}")
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its body: nobody to answer
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await self._refuse(scope, receive, send, f"more than {self.max_bytes} bytes")
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()  # later calls wait for the disconnect, as usual

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, seen: str) -> None:
        exc = PayloadTooLarge(
            f"request body too large ({seen}); the limit is {self.max_bytes} bytes "
            "(split the inputs over several requests)",
        )
        response = error_response(
            exc.status, exc.message, code=exc.code, headers={"Connection": "close"}
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses malformed framing itself; count bytes instead
    return None


class InFlight:
    """At most ``limit`` embedding requests run at once; a request waits at most ``wait_s`` for a
    slot, then gets Overloaded (429 with Retry-After). The slot is held until the worker thread
    finishes, even when the client has gone away, so the bound is real."""

    def __init__(self, limit: int, wait_s: float, what: str = "embedding request(s)") -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.what = what
        self.active = 0
        self._semaphore: anyio.Semaphore | None = None

    def bind(self) -> None:
        """Create the semaphore inside the serving event loop (called at start-up)."""
        self._semaphore = anyio.Semaphore(self.limit)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._semaphore is None:
            self.bind()
        semaphore = self._semaphore
        assert semaphore is not None
        acquired = False
        try:
            semaphore.acquire_nowait()
            acquired = True
        except anyio.WouldBlock:
            if self.wait_s > 0:
                with anyio.move_on_after(self.wait_s):
                    await semaphore.acquire()
                    acquired = True
        if not acquired:
            raise Overloaded(
                f"{self.limit} {self.what} already running, the most this server takes "
                "at once; retry after the Retry-After delay",
                retry_after_s=1.0,
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            semaphore.release()
