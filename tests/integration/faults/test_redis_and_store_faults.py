"""Redis killed (during enqueue, mid-job) and restarted with its AOF, a dead context
builder's lock, a local folder made read-only for a few seconds, and what a job costs in
Redis. Each job ends with every document stored exactly once."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery.contrib.testing.worker import start_worker

from app.config import Settings
from app.errors import InvalidInput, NotFound, StoreUnavailable
from app.ingest import enqueue, job_status
from app.locks import LOCK_KEY
from app.model import CdeEmbedder
from app.queue import INGEST_QUEUE, CeleryDispatcher
from app.service import Cdeq
from tests.helpers.builders import documents, make_settings, wait_finished
from tests.integration.conftest import redis_url
from tests.integration.faults.conftest import (
    RedisServer,
    Workers,
    finished,
    stored_ids,
    wait_for,
)
from workers.celery_app import create_app, set_worker_service

REDIS_URL = redis_url(13)


def producer_for(url: str, tmp_path: Path, model_dir: Path, **ingest: object) -> Cdeq:
    return Cdeq(
        Settings(
            model={"name": str(model_dir), "device": "cpu"},
            redis={"url": url},
            qdrant={"path": str(tmp_path / "qdrant")},
            ingest={"batch_size": 20, **ingest},
        )
    )


class KillRedisAfter(CeleryDispatcher):
    """The real dispatcher, with Redis SIGKILLed after `sends` batches are queued."""

    def __init__(self, svc: Cdeq, server: RedisServer, sends: int) -> None:
        super().__init__(svc.celery)
        self.server, self.left = server, sends

    def send_batch(self, job_id: str, index: int, request_id: str | None = None) -> None:
        if self.left == 0 and self.server.process is not None:
            self.server.kill()
        self.left -= 1
        super().send_batch(job_id, index, request_id)


@pytest.mark.slow
def test_redis_killed_during_enqueue_leaves_a_job_that_completes(
    private_redis: RedisServer, workers: Workers, tmp_path: Path, tiny_model_dir: Path
) -> None:
    producer = producer_for(private_redis.url, tmp_path, tiny_model_dir)
    producer.__dict__["dispatcher"] = KillRedisAfter(producer, private_redis, sends=2)
    docs = documents(120)  # 6 batches: 2 queued, then Redis dies
    job_id = enqueue("enq", docs, service=producer)  # the job exists: its id comes back
    with pytest.raises(StoreUnavailable, match="was not accepted"):  # Redis still down
        enqueue("enq", docs, service=producer)
    private_redis.start()  # same port and folder: the AOF brings the job back
    workers.start(private_redis.url)  # its reconciler queues the 4 batches never sent
    status = wait_for(
        "job done", finished(lambda: job_status(job_id, service=producer)), logs=workers.logs
    )
    workers.stop_all()
    assert (status.state, status.succeeded, status.failed) == ("done", 120, 0), status
    ids = [d["id"] for d in docs]
    assert stored_ids(tmp_path / "qdrant", "enq", ids) == sorted(ids)
    producer.close()


@pytest.mark.slow
def test_redis_sigkilled_mid_job_and_restarted_with_aof(
    private_redis: RedisServer, workers: Workers, tmp_path: Path, tiny_model_dir: Path
) -> None:
    producer = producer_for(private_redis.url, tmp_path, tiny_model_dir)
    workers.start(private_redis.url, "slow")
    docs = documents(200)  # 10 batches, 0.4 s of upsert each
    job_id = enqueue("aof", docs, service=producer)
    wait_for(
        "a batch done",
        lambda: job_status(job_id, service=producer).batches_done >= 1,
        logs=workers.logs,
    )
    private_redis.kill()
    time.sleep(1.0)
    private_redis.start()
    status = wait_for(
        "job done", finished(lambda: job_status(job_id, service=producer)), logs=workers.logs
    )
    workers.stop_all()
    assert (status.state, status.succeeded, status.failed) == ("done", 200, 0), status
    ids = [d["id"] for d in docs]
    assert stored_ids(tmp_path / "qdrant", "aof", ids) == sorted(ids)
    producer.close()


# ---- in-process workers (a real Celery worker in a thread of this test) --------------------------
@pytest.fixture()
def service(tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path) -> Iterator[Cdeq]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    svc = Cdeq(
        make_settings(
            tiny_model_dir, tmp_path / "qdrant", redis_url=REDIS_URL, context_lock_timeout_s=2
        ),
        embedder=embedder,
    )
    yield svc
    svc.close()
    client.flushdb()
    client.close()


@pytest.fixture()
def worker(service: Cdeq) -> Iterator[Cdeq]:
    app = create_app(service.settings)
    set_worker_service(service)
    with start_worker(
        app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=30
    ):
        yield service
    set_worker_service(None)


def test_dead_lock_holder_expires_and_another_worker_builds(worker: Cdeq) -> None:
    assert worker.redis is not None
    # A builder that died holding the lock: nobody renews it, so it lasts one TTL (2 s here).
    worker.redis.set(LOCK_KEY.format("orphan"), "dead-builder", px=2000)
    docs = documents(60)
    status = wait_finished(enqueue("orphan", docs, service=worker), worker, timeout=120)
    assert (status.state, status.succeeded, status.failed) == ("done", 60, 0), status
    assert worker.store.count("orphan") == 60


def test_a_held_context_lock_is_renewed_past_its_ttl(service: Cdeq) -> None:
    assert service.redis is not None
    with service.locks("busy"):
        time.sleep(3.0)  # longer than the 2 s TTL
        assert service.redis.pttl(LOCK_KEY.format("busy")) > 0
    assert not service.redis.exists(LOCK_KEY.format("busy"))


def test_read_only_folder_for_a_few_seconds_is_retried_until_all_stored(
    worker: Cdeq, tmp_path: Path
) -> None:
    wait_finished(enqueue("ro", documents(20, seed=3), service=worker), worker)  # folder exists
    folders = [p for p in (tmp_path / "qdrant").rglob("*") if p.is_dir() and "ro" in p.name]
    files = [f for d in folders for f in d.glob("storage.sqlite")]
    assert files, list((tmp_path / "qdrant").rglob("*"))
    # chattr +i makes the SQLite file and folder unwritable even for root: a real fault.
    if subprocess.run(["chattr", "+i", *map(str, files), *map(str, folders)]).returncode:
        pytest.skip("chattr +i is not available here, so a folder cannot be made read-only")
    try:
        docs = documents(80)
        job_id = enqueue("ro", docs, service=worker)
        time.sleep(3.0)
        assert not job_status(job_id, service=worker).finished  # waiting, not failing
    finally:
        subprocess.run(["chattr", "-i", *map(str, files), *map(str, folders)], check=True)
    status = wait_finished(job_id, worker, timeout=120)
    assert (status.state, status.succeeded, status.failed) == ("done", 80, 0), status
    ids = [d["id"] for d in docs]
    assert sorted(worker.store.get_documents("ro", ids)) == sorted(ids)


def test_lone_surrogate_id_is_refused_before_anything_is_recorded(service: Cdeq) -> None:
    """Validation refuses what Redis and Qdrant cannot store, so no job is left half-made."""
    assert service.redis is not None
    docs = documents(10)
    docs[3]["id"] = "bad\ud800id"
    before = service.redis.dbsize()
    with pytest.raises(InvalidInput, match=r"documents\[3\]\.id: .* not valid Unicode"):
        enqueue("surrogate", docs, service=service)
    assert service.redis.dbsize() == before


def test_a_job_in_redis_costs_about_its_documents_once(service: Cdeq) -> None:
    """The documents are written once (in the job record); messages carry (job id, index)."""
    assert service.redis is not None
    docs = documents(640)  # 20 batches, no worker: everything stays queued
    job_id = enqueue("size", docs, service=service)
    payload = sum(len(json.dumps([d["text"], d["metadata"]])) for d in docs)
    r = service.redis
    stored = sum(len(v) for v in r.hvals(f"cdeq:job:{job_id}:batches"))
    stored += len(r.get(f"cdeq:job:{job_id}:context") or b"")
    messages = r.lrange(INGEST_QUEUE, 0, -1)
    assert len(messages) == 20
    total = stored + sum(len(m) for m in messages)
    assert total <= 1.5 * payload, (total, payload, stored)
    with pytest.raises(NotFound):
        job_status("gone", service=service)
