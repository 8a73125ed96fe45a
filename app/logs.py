"""Logging setup shared by the entry points: plain text or one JSON object per line, and the
request id of the work being done (set by the API per request, by a worker per task).

The request id lives in a context variable, so it follows a request into the threads that
`run_in_threadpool` starts (which copy the context) without being passed to every function.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("cdeq_request_id", default=None)

# What a client may send as X-Request-ID: printable, no spaces, short (it lands in logs).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


def accept_request_id(sent: str | None) -> str:
    """The client's id when it is safe to log, else a new one (32 hex digits)."""
    if sent is not None and _REQUEST_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (or None) to every record, for both formats."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str | int = "WARNING", fmt: str = "text") -> None:
    """Point the root logger at stderr in `fmt` ('text' or 'json'), replacing its handlers;
    uvicorn's loggers propagate to it, so access lines get the same format."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
