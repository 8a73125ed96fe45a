"""Fault tests: real `cdeq worker` processes, real Redis servers (a private one, with AOF, for
tests that kill Redis), local storage and the tiny model. Leases, heartbeats and the
reconciler run with short settings (FAST) so each recovery takes seconds, not minutes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from app.config import QdrantSettings
from app.jobs import JobStatus
from app.store import QdrantStore
from tests.helpers.builders import ROOT

# Seconds, for tests only (defaults: lease 60, heartbeat 10, reconcile 30).
FAST = {
    "CDEQ_INGEST__LEASE_TTL_S": "3",
    "CDEQ_INGEST__HEARTBEAT_S": "0.5",
    "CDEQ_INGEST__RECONCILE_INTERVAL_S": "1",
    "CDEQ_INGEST__RETRY_BACKOFF_MAX_S": "1",
}


def free_port(start: int = 6390, stop: int = 6400) -> int:
    for port in range(start, stop):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}-{stop - 1}")


@dataclass
class RedisServer:
    """A private redis-server with AOF (every write synced), stopped and restarted by pid."""

    folder: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed, so no private Redis to kill")
        self.port = self.port or free_port()
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                assert time.monotonic() < deadline, "private redis-server did not start"
                time.sleep(0.1)
        client.close()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None


@pytest.fixture()
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    server.start()
    yield server
    if server.process is not None:
        server.kill()


@dataclass
class Workers:
    """`cdeq worker` processes (each its own session: main + pool process), killed at the end."""

    tmp_path: Path
    model_dir: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, redis_url: str, **extra: str) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CDEQ_")}
        return {
            **clean,
            "PYTHONPATH": str(ROOT),
            "CDEQ_REDIS__URL": redis_url,
            "CDEQ_QDRANT__PATH": str(self.tmp_path / "qdrant"),
            "CDEQ_MODEL__NAME": str(self.model_dir),
            "CDEQ_MODEL__DEVICE": "cpu",
            "CDEQ_INGEST__BATCH_SIZE": "20",
            **FAST,
            **extra,
        }

    def start(self, redis_url: str, fault: str = "", **extra: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"worker-{len(self.started)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.fault_worker"],
            env=self.env(redis_url, CDEQ_TEST_FAULT=fault, **extra),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.started.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the whole worker: main process and pool process."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("worker-*.log"))
        )

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.kill(proc)


@pytest.fixture()
def workers(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path, tiny_model_dir)
    yield pool
    pool.stop_all()


def wait_for(
    what: str, check: Callable[[], Any], *, timeout: float = 120, logs: Callable[[], str] = str
) -> Any:
    """Poll `check` until it returns something truthy (Redis errors while it restarts count
    as not yet); the bound only keeps a broken run from hanging CI."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except redis.RedisError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout}s\n{logs()[-6000:]}")
        time.sleep(0.2)


def finished(status_of: Callable[[], JobStatus]) -> Callable[[], JobStatus | None]:
    def check() -> JobStatus | None:
        status = status_of()
        return status if status.finished else None

    return check


def stored_ids(qdrant_path: Path, collection: str, ids: list[str], dim: int = 64) -> list[str]:
    """The ids of `ids` that the collection holds, and (asserted) its exact point count."""
    store = QdrantStore.from_settings(QdrantSettings(path=str(qdrant_path)), dim=dim)
    try:
        count = store.count(collection)
        found = sorted(store.get_documents(collection, ids))
    finally:
        store.close()
    assert count == len(found), f"{count} points, but {len(found)} of the job's ids: duplicates?"
    return found
