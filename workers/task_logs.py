"""A worker's log lines, Celery's own included, through `app.logs`: one format (text or JSON,
`CDEQ_LOG__FORMAT`) and, inside a task, its request id, job id, batch index, task name and id.

Where a line is written decides where its fields come from:

- in the process that runs the task (a prefork pool process; the worker itself with the solo
  pool), `workers.celery_app` sets `app.logs.request_id` and `app.logs.task_fields` from
  `task_prerun` to `task_postrun`, which bracket the task, Celery's "succeeded"/"failed"/
  "retry" lines included;
- in the worker's main process, which logs "Task … received" before anything runs, the
  request class (`TaggedRequest`) names the fields when the message arrives: the job id and
  batch from the task's arguments, the request id from the message header the producer set
  (`app.queue.REQUEST_ID_HEADER`). `CeleryTaskFilter` puts them on Celery's lines about that
  task (they carry the task id in `record.data`), and the request's failure and time-limit
  handlers run with them set.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import Token
from typing import Any

from celery.worker.request import Request

from app.logs import request_id, task_fields
from app.queue import REQUEST_ID_HEADER, TASK_INGEST_BATCH, TASK_REBUILD_BATCH

OUR_TASKS = (TASK_INGEST_BATCH, TASK_REBUILD_BATCH)


def fields_of(name: str, task_id: str | None, args: Sequence[Any] | None) -> dict[str, object]:
    """The log fields of one of our tasks, from its arguments: `ingest_batch(job_id, index)`
    (before 0.2: `(job_id, collection, index, documents)`) or `rebuild_batch(job_id,
    collection, index, point_ids)`."""
    fields: dict[str, object] = {"task_name": name, "task_id": task_id}
    if name not in OUR_TASKS or not args:
        return fields
    fields["job_id"] = str(args[0])
    index = args[1] if len(args) == 2 else args[2] if len(args) >= 3 else None
    with suppress(TypeError, ValueError):
        fields["batch"] = int(index) if index is not None else None
    return fields


Tags = tuple["Token[str | None]", "Token[Mapping[str, object] | None]"]


def set_tags(rid: str | None, fields: Mapping[str, object] | None) -> Tags:
    """From now on, this context's log lines carry this request id and these task fields."""
    return request_id.set(rid), task_fields.set(fields)


def reset_tags(tags: Tags) -> None:
    request_id.reset(tags[0])
    task_fields.reset(tags[1])


@contextmanager
def tagged(rid: str | None, fields: Mapping[str, object] | None) -> Iterator[None]:
    """Log lines written inside carry this request id and these task fields."""
    tags = set_tags(rid, fields)
    try:
        yield
    finally:
        reset_tags(tags)


class _Recent:
    """The fields of the tasks this process received lately, by task id (bounded)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.items: OrderedDict[str, tuple[str | None, dict[str, object]]] = OrderedDict()
        self.guard = threading.Lock()

    def remember(self, task_id: str, rid: str | None, fields: dict[str, object]) -> None:
        with self.guard:
            self.items[task_id] = (rid, fields)
            self.items.move_to_end(task_id)
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def get(self, task_id: str) -> tuple[str | None, dict[str, object]] | None:
        with self.guard:
            return self.items.get(task_id)


received = _Recent()


class TaggedRequest(Request):
    """Celery's request (the worker's main process's view of a message), remembering its log
    fields for "Task … received" and running its failure/time-limit handlers with them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        rid = self.request_dict.get(REQUEST_ID_HEADER)
        self.log_request_id: str | None = rid if isinstance(rid, str) else None
        self.log_fields = fields_of(self.name, self.id, self.args)
        received.remember(self.id, self.log_request_id, self.log_fields)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        with tagged(self.log_request_id, self.log_fields):
            super().on_timeout(soft, timeout)

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        with tagged(self.log_request_id, self.log_fields):
            super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


class CeleryTaskFilter(logging.Filter):
    """Tags Celery's own lines about a task received by this process ("Task … received"):
    they carry `data={'id': task_id, …}`. Lines tagged another way keep their fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            known = received.get(data["id"])
            if known is not None:
                rid, fields = known
                if not hasattr(record, "request_id") and rid is not None:
                    record.request_id = rid
                for name, value in fields.items():
                    if not hasattr(record, name):
                        setattr(record, name, value)
        return True
