"""Logging setup shared by the entry points: plain text or one JSON object per line, and the
request id of the work being done (set by the API per request, by a worker per task).

The request id lives in a context variable, so it follows a request into the threads that
`run_in_threadpool` starts (which copy the context) without being passed to every function.
A worker also sets `task_fields` (job id, batch index, task name and id) while a task runs;
they are optional fields of a line, present only when set.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("cdeq_request_id", default=None)
# The name of the API key a request came with (set by `app.api.auth`): never the key itself.
api_key_name: ContextVar[str | None] = ContextVar("cdeq_api_key_name", default=None)

# The optional fields of a line, in the order they are written; a worker sets them per task.
TASK_FIELDS = ("job_id", "batch", "task_name", "task_id")
task_fields: ContextVar[Mapping[str, object] | None] = ContextVar("cdeq_task_fields", default=None)

# What a client may send as X-Request-ID: printable, no spaces, short (it lands in logs).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


def accept_request_id(sent: str | None) -> str:
    """The client's id when it is safe to log, else a new one (32 hex digits)."""
    if sent is not None and _REQUEST_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (or None) to every record, for both formats, and the task fields
    (`TASK_FIELDS`) that are set; a field already on the record is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        if not hasattr(record, "api_key") and (name := api_key_name.get()) is not None:
            record.api_key = name
        fields = task_fields.get()
        if fields:
            for name in TASK_FIELDS:
                if name in fields and not hasattr(record, name):
                    setattr(record, name, fields[name])
        return True


def _task_fields_of(record: logging.LogRecord) -> dict[str, object]:
    return {
        name: value for name in TASK_FIELDS if (value := getattr(record, name, None)) is not None
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, the API key's name
    (when set), the task fields that are set (job_id, batch, task_name, task_id), exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            **({"api_key": key} if (key := getattr(record, "api_key", None)) else {}),
            **_task_fields_of(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """`TEXT_FORMAT`, then the request id, the API key's name and the task fields that are
    set, in brackets: `… INFO app.ingest: stored 8 documents [request_id=r-1 job_id=ab12
    batch=0]`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        tags = {
            "request_id": getattr(record, "request_id", None),
            # The key's name, never the key ("key=", not "api_key=": the access log must
            # never show an `?api_key=` query string, and a test greps for that).
            "key": getattr(record, "api_key", None),
            **_task_fields_of(record),
        }
        shown = " ".join(f"{k}={v}" for k, v in tags.items() if v is not None)
        return f"{line} [{shown}]" if shown else line


def configure_logging(
    level: str | int = "WARNING", fmt: str = "text", filters: Iterable[logging.Filter] = ()
) -> None:
    """Point the root logger at stderr in `fmt` ('text' or 'json'), replacing its handlers;
    uvicorn's loggers propagate to it, so access lines get the same format. `filters` run
    before the request id is added (a worker's tag Celery's own task lines)."""
    handler = logging.StreamHandler()
    for extra in filters:
        handler.addFilter(extra)
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
