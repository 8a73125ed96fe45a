"""Builders the tests share: documents, settings, a cosine, the OpenAI error-shape check."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.config import Settings
from app.ingest import job_status
from app.jobs import JobStatus
from app.service import Cdeq
from tests.helpers.texts import topical_texts

ROOT = Path(__file__).resolve().parents[2]


def documents(n: int, seed: int = 21) -> list[dict[str, Any]]:
    """`n` documents with topical texts (a tiny random model tells them apart) and metadata."""
    texts = topical_texts(n, seed=seed)
    return [
        {"id": f"doc-{i}", "text": t, "metadata": {"n": i, "even": i % 2 == 0}}
        for i, t in enumerate(texts)
    ]


def corpus(n: int = 40, topic: str = "river") -> list[dict[str, Any]]:
    """`n` short documents on one topic, with metadata to filter on."""
    return [
        {
            "id": f"d{i}",
            "text": f"document {i} about the {topic} and item {i % 7} in region {i % 5}",
            "metadata": {"n": i, "parity": "even" if i % 2 == 0 else "odd"},
        }
        for i in range(n)
    ]


def cosine(a: Any, b: Any) -> np.ndarray:
    """Row-wise cosine in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def make_settings(
    model_dir: Path, qdrant_path: Path, *, redis_url: str | None = None, **ingest: Any
) -> Settings:
    """Settings for a test service: the tiny model on CPU, local storage, fast retries."""
    return Settings(
        model={"name": str(model_dir), "device": "cpu"},
        redis={"url": redis_url},
        qdrant={"path": str(qdrant_path)},
        ingest={"batch_size": 32, "retry_backoff_max_s": 1, **ingest},
    )


def wait_finished(job_id: str, svc: Cdeq, timeout: float = 120) -> JobStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = job_status(job_id, service=svc)
        if status.finished:
            return status
        time.sleep(0.2)
    raise AssertionError(
        f"job {job_id} not finished after {timeout}s: {job_status(job_id, service=svc)}"
    )


UNCHECKED = object()


def assert_error(response: Any, status: int, param: object = UNCHECKED) -> dict[str, Any]:
    """The response has `status` and the OpenAI error shape (and `param`, when given)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if param is not UNCHECKED:
        assert body["error"]["param"] == param, body
    return dict(body["error"])


def cdeq(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the `cdeq` command line in a subprocess, with no CDEQ_* variable of ours leaking in."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CDEQ_")}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


# ---- a real `cdeq serve` process ---------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextmanager
def serve_process(model_dir: Path, tmp: Path, env: dict[str, str]) -> Iterator[Server]:
    """`cdeq serve` on a free loopback port over `model_dir` on CPU, with no CDEQ_* variable of
    ours leaking in (`env` adds some); its output goes to `tmp/server.log`. Stopped on exit."""
    import httpx
    import pytest

    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CDEQ_")}
    log = tmp / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--model",
                str(model_dir),
                "--device",
                "cpu",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**clean, "PYTHONPATH": str(ROOT), **env},
            cwd=ROOT,
        )
    srv = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            pytest.fail(f"cdeq serve exited with {process.returncode}:\n{srv.output()}")
        try:
            if httpx.get(f"{srv.url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"cdeq serve did not come up:\n{srv.output()}")
        time.sleep(0.2)
    try:
        yield srv
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def slow_worker(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real `cdeq worker` (tests/helpers/slow_worker.py) in its own process group, whose
    first upsert writes half a batch and hangs; stopped with its pool at the end."""
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.slow_worker"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield worker
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()


def kill_mid_batch(worker: subprocess.Popen[bytes], marker: Path, log_path: Path) -> None:
    """Wait (bounded) until the slow worker's pool process wrote `marker` mid-upsert, then
    SIGKILL that pool process."""
    deadline = time.monotonic() + 90
    while not marker.exists():
        assert worker.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, "the worker never reached the upsert"
        time.sleep(0.1)
    time.sleep(0.2)
    os.kill(int(marker.read_text()), signal.SIGKILL)
