"""Log lines (app.logs) and a worker's tagging of them (workers.task_logs): the optional task
fields appear only when set, so the API's lines keep their shape; text lines carry the request
id; Celery's own "received" line is tagged from the message; a bad format stops a worker."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

from app.logs import TEXT_FORMAT, JsonFormatter, RequestIdFilter, TextFormatter, task_fields
from app.queue import TASK_INGEST_BATCH, TASK_REBUILD_BATCH
from tests.helpers.builders import ROOT
from workers.task_logs import CeleryTaskFilter, fields_of, received, tagged


def _record(msg: str = "hello %s", args: tuple[object, ...] = ("you",)) -> logging.LogRecord:
    return logging.LogRecord("cdeq.test", logging.INFO, __file__, 1, msg, args, None)


def _filtered(record: logging.LogRecord, *filters: logging.Filter) -> logging.LogRecord:
    for f in (*filters, RequestIdFilter()):
        assert f.filter(record)
    return record


def test_json_lines_outside_a_task_keep_the_api_shape() -> None:
    line = json.loads(JsonFormatter().format(_filtered(_record())))
    assert set(line) == {"time", "level", "logger", "message", "request_id"}
    assert line["request_id"] is None and line["message"] == "hello you"


def test_json_and_text_lines_inside_a_task_carry_its_fields() -> None:
    fields = fields_of(TASK_INGEST_BATCH, "t-1", ["job-1", 3])
    with tagged("rid-1", fields):
        record = _filtered(_record())
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "rid-1"
    assert (line["job_id"], line["batch"], line["task_name"], line["task_id"]) == (
        "job-1",
        3,
        TASK_INGEST_BATCH,
        "t-1",
    )
    text = TextFormatter().format(record)
    assert text.endswith(
        "INFO cdeq.test: hello you [request_id=rid-1 job_id=job-1 batch=3 "
        f"task_name={TASK_INGEST_BATCH} task_id=t-1]"
    ), text
    assert task_fields.get() is None  # reset on leaving


def test_text_lines_without_a_request_id_are_unchanged() -> None:
    record = _filtered(_record())
    assert TextFormatter().format(record) == logging.Formatter(TEXT_FORMAT).format(record)


def test_fields_of_each_task_shape() -> None:
    assert fields_of(TASK_INGEST_BATCH, "a", ["j", 4])["batch"] == 4
    legacy = fields_of(TASK_INGEST_BATCH, "b", ["j", "coll", 2, [{"id": "x", "text": "y"}]])
    assert (legacy["job_id"], legacy["batch"]) == ("j", 2)
    rebuild = fields_of(TASK_REBUILD_BATCH, "c", ["j", "coll", 5, ["p1"]])
    assert (rebuild["job_id"], rebuild["batch"]) == ("j", 5)
    assert fields_of("other.task", "d", ["j", 1]) == {"task_name": "other.task", "task_id": "d"}


def test_celerys_received_line_is_tagged_from_the_message() -> None:
    received.remember("task-9", "rid-9", fields_of(TASK_INGEST_BATCH, "task-9", ["job-9", 0]))
    known = _record("Task %(name)s[%(id)s] received", ({"name": "n", "id": "task-9"},))
    known.data = {"name": "n", "id": "task-9"}
    unknown = _record("Task %(name)s[%(id)s] received", ({"name": "n", "id": "task-0"},))
    unknown.data = {"name": "n", "id": "task-0"}
    got = json.loads(JsonFormatter().format(_filtered(known, CeleryTaskFilter())))
    assert (got["request_id"], got["job_id"], got["batch"]) == ("rid-9", "job-9", 0)
    other = json.loads(JsonFormatter().format(_filtered(unknown, CeleryTaskFilter())))
    assert other["request_id"] is None and "job_id" not in other


def test_celery_worker_refuses_a_bad_log_format() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDEQ_")}
    env.update(PYTHONPATH=str(ROOT), CDEQ_LOG__FORMAT="xml")
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "CDEQ_LOG__FORMAT: Input should be 'text' or 'json' (got 'xml')" in done.stderr
