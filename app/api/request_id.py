"""X-Request-ID: every request gets an id (the client's, when it is safe to log, else a new
one), echoed in the response and set in `app.logs.request_id` for every log line written
while the request runs — in JSON logs it is the `request_id` field — and for the job records
of the jobs the request creates."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import accept_request_id, request_id

HEADER = b"x-request-id"


class RequestId:
    """ASGI middleware: choose the request id, set it for the request, echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = None
        for name, value in scope.get("headers", []):
            if name == HEADER:
                sent = value.decode("latin-1")
                break
        rid = accept_request_id(sent)
        token = request_id.set(rid)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                headers.append((HEADER, rid.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            request_id.reset(token)
