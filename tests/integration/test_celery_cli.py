"""Celery's own tools work on cdeq: `celery -A workers.celery_app report`, a worker started by
`celery -A workers.celery_app worker`, and `inspect ping` against it; the worker stores a job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from app.ingest import enqueue
from app.service import Cdeq
from tests.helpers.builders import ROOT, documents, make_settings, wait_finished
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
            job_id = enqueue("smoke", documents(5), service=producer)
            status = wait_finished(job_id, producer, timeout=120)
        finally:
            producer.close()
        assert (status.state, status.succeeded) == ("done", 5), status
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
        client.flushdb()
        client.close()
