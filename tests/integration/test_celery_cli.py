"""Celery's own tools work on cdeq: `celery -A workers.celery_app report`, a worker started by
`celery -A workers.celery_app worker`, and `inspect ping` against it; the worker stores a job.
A worker's log lines, Celery's own included, follow CDEQ_LOG__FORMAT and carry the request id
and job of the task they are about."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from app.ingest import enqueue, ingest_documents
from app.lifecycle import rebuild_context
from app.service import Cdeq
from tests.helpers.builders import ROOT, corpus, documents, make_settings, wait_finished
from tests.integration.conftest import redis_url

REDIS_URL = redis_url(12)
pytestmark = pytest.mark.slow


def celery(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_celery_tools_find_the_app(tiny_model_dir: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDEQ_")}
    env.update(
        PYTHONPATH=str(ROOT),
        CDEQ_REDIS__URL=REDIS_URL,
        CDEQ_MODEL__NAME=str(tiny_model_dir),
        CDEQ_MODEL__DEVICE="cpu",
        CDEQ_QDRANT__PATH=str(tmp_path / "qdrant"),
        CDEQ_LOG__FORMAT="text",
    )
    report = celery("report", env=env)
    assert report.returncode == 0, report.stderr
    assert "task_default_queue: 'ingest'" in report.stdout and "cdeq.ingest_batch" in report.stdout

    node = f"smoke-{os.getpid()}@localhost"
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.celery_app",
            "worker",
            "-P",
            "solo",
            "-n",
            node,
            "--loglevel",
            "INFO",
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            ping = celery("inspect", "ping", "-d", node, "--timeout", "2", env=env)
            if ping.returncode == 0 and node in ping.stdout:
                break
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, ping.stdout + ping.stderr
        # The worker owns the local Qdrant folder: the producer only records and queues.
        producer = Cdeq(make_settings(tiny_model_dir, tmp_path / "unused", redis_url=REDIS_URL))
        try:
            job_id = enqueue("smoke", documents(5), service=producer, request_id="rid-text-1")
            status = wait_finished(job_id, producer, timeout=120)
        finally:
            producer.close()
        assert (status.state, status.succeeded) == ("done", 5), status
    finally:
        _stop(worker)
        log.close()
        client.flushdb()
        client.close()
    # Text logs: `time LEVEL logger: message [request_id=… job_id=… batch=… …]`, Celery's own
    # task lines included (the solo pool runs the task in the worker's main process).
    output = (tmp_path / "worker.log").read_text()
    tagged = [line for line in output.splitlines() if f"job_id={job_id}" in line]
    assert [line for line in tagged if "] received [" in line], output
    assert [line for line in tagged if "succeeded in" in line], output
    assert [line for line in tagged if "batch 0: started" in line], output
    for line in tagged:
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) [\w.]+: ", line), line
        assert line.endswith("]") and "request_id=rid-text-1 " in line, line


def _stop(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def test_worker_json_logs_carry_request_and_job(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`cdeq worker` (prefork: Celery's "received" in the main process, the task in a pool
    process) with CDEQ_LOG__FORMAT=json: every stderr line is one JSON object, and the lines
    about a rebuild's and an ingest's batches carry their API request's id and their job."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    qdrant = tmp_path / "qdrant"
    settings = make_settings(tiny_model_dir, qdrant, redis_url=REDIS_URL)
    settings.context.auto_rebuild = False
    producer = Cdeq(settings)
    try:
        ingest_documents("logged", corpus(12), service=producer)  # in-process: no request id
        rebuild = rebuild_context("logged", service=producer, request_id="rid-rebuild-1")
        ingest = enqueue("logged", documents(5), service=producer, request_id="rid-ingest-1")
        producer.store.close()  # local storage belongs to one process: hand it to the worker
        del producer.__dict__["store"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDEQ_")}
        env.update(
            PYTHONPATH=str(ROOT),
            CDEQ_REDIS__URL=REDIS_URL,
            CDEQ_MODEL__NAME=str(tiny_model_dir),
            CDEQ_MODEL__DEVICE="cpu",
            CDEQ_QDRANT__PATH=str(qdrant),
            CDEQ_INGEST__BATCH_SIZE="32",
            CDEQ_CONTEXT__AUTO_REBUILD="false",
            CDEQ_LOG__FORMAT="json",
        )
        err_path = tmp_path / "worker.err"
        with err_path.open("w") as err, (tmp_path / "worker.out").open("w") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker", "--concurrency", "1"],
                env=env,
                cwd=ROOT,
                stdout=out,  # Celery's banner
                stderr=err,
            )
            try:
                done = [wait_finished(job, producer, timeout=180) for job in (rebuild, ingest)]
            finally:
                _stop(worker)
        assert [s.state for s in done] == ["done", "done"], (done, err_path.read_text())
    finally:
        producer.close()
        client.flushdb()
        client.close()
    text = err_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # all JSON
    assert all({"time", "level", "logger", "message", "request_id"} <= set(x) for x in lines)
    for job, rid, started, steps in (
        # a rebuild of 12 documents: one batch, then its finish step (catch-up and swap)
        (rebuild, "rid-rebuild-1", f"rebuild {rebuild} batch 0: started", {0, 1}),
        (ingest, "rid-ingest-1", f"job {ingest} batch 0: started", {0}),
    ):
        mine = [x for x in lines if x.get("job_id") == job]
        assert all(x["request_id"] == rid for x in mine), mine
        assert all(x["task_id"] and x["task_name"] for x in mine), mine
        assert {x["batch"] for x in mine} == steps, mine
        for logger, message in (
            ("celery.worker.strategy", "] received"),  # the worker's main process
            ("workers.celery_app", started),  # the pool process, ours
            ("celery.app.trace", "] succeeded in"),  # the pool process, Celery's
        ):
            assert any(x["logger"] == logger and message in x["message"] for x in mine), (
                logger,
                message,
                text,
            )
    outside = [x for x in lines if "job_id" not in x]  # start-up, the reconciler
    assert outside and all(x["request_id"] is None for x in outside), outside
