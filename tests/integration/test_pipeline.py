"""The ingestion pipeline end to end with real parts: Redis, Celery workers (in-process and
a separate process), Qdrant local mode, the tiny model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker

from app.config import Settings
from app.errors import InvalidInput, NotFound
from app.ingest import enqueue, job_status
from app.model import CdeEmbedder
from app.query import list_collections, search
from app.service import Cdeq
from app.store import QdrantStore
from tests.helpers.builders import ROOT, documents, kill_mid_batch, slow_worker, wait_finished
from tests.helpers.builders import make_settings as _make_settings
from tests.helpers.faults import CountingEmbedder, FlakyStore
from tests.integration.conftest import flushed, redis_url
from workers.celery_app import create_app, set_worker_service

REDIS_URL = redis_url(14)


def make_settings(
    model_dir: Path, qdrant_path: Path, *, queued: bool = True, **ingest: Any
) -> Settings:
    return _make_settings(model_dir, qdrant_path, redis_url=REDIS_URL if queued else None, **ingest)


@pytest.fixture()
def clean_redis() -> Iterator[redis.Redis]:
    yield from flushed(14)


@pytest.fixture()
def service(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> Iterator[Cdeq]:
    svc = Cdeq(
        make_settings(tiny_model_dir, tmp_path / "qdrant"), embedder=CountingEmbedder(embedder)
    )  # type: ignore[arg-type]
    yield svc
    svc.close()


@pytest.fixture()
def worker(service: Cdeq) -> Iterator[Cdeq]:
    """A real Celery worker consuming the Redis queue in a thread of this process, sharing
    the test's service (local Qdrant is single-process)."""
    app = create_app(service.settings)
    set_worker_service(service)
    with start_worker(
        app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=30
    ):
        yield service
    set_worker_service(None)


# ---- end to end ------------------------------------------------------------------------------
def test_queue_to_qdrant_end_to_end(worker: Cdeq) -> None:
    svc = worker
    docs = documents(300)
    job_id = enqueue("papers", docs, service=svc)
    status = wait_finished(job_id, svc)
    assert (status.state, status.total, status.succeeded, status.failed) == ("done", 300, 300, 0)
    assert status.batches == status.batches_done == 10
    assert svc.store.count("papers") == 300
    # stage 1 ran once for the whole job, and one context version exists
    assert svc.embedder.context_calls == 1  # type: ignore[attr-defined]
    assert svc.contexts.builds == 1
    context = svc.contexts.current("papers")
    assert svc.store.next_context_version("papers") == context.version + 1
    record = svc.store.load_context("papers")
    assert record is not None and len(record.sampled_ids) == svc.embedder.context_size
    assert set(record.sampled_ids) <= {d["id"] for d in docs}
    # a document's own text finds it first; the query used the documents' context version
    for doc in docs[::30]:
        hits = search("papers", doc["text"], top_k=3, service=svc)
        assert hits[0].document_id == doc["id"]
        assert hits[0].payload["context_version"] == context.version
        assert hits[0].payload["metadata"] == doc["metadata"]
        assert hits[0].payload["text"] == doc["text"]
        assert hits[0].score >= hits[1].score
    # a second job into the same collection reuses the context
    second = enqueue("papers", documents(40, seed=99)[:40], service=svc)
    assert wait_finished(second, svc).state == "done"
    assert svc.embedder.context_calls == 1  # type: ignore[attr-defined]
    assert [c.name for c in list_collections(service=svc)] == ["papers"]


def test_same_job_enqueued_twice_leaves_no_duplicates(worker: Cdeq) -> None:
    docs = documents(70)
    first = enqueue("dupes", docs, service=worker)
    second = enqueue("dupes", docs, service=worker)
    assert wait_finished(first, worker).succeeded == 70
    assert wait_finished(second, worker).succeeded == 70
    assert worker.store.count("dupes") == 70


def ingest_with_flaky_store(
    settings: Settings, embedder: CdeEmbedder, failures: int, collection: str, n_docs: int
) -> tuple[Any, int, int]:
    """Run one job through a real in-process worker whose store fails `failures` times;
    returns the finished job's status, the points stored and the failures left unused."""
    from migrations import migrate

    store = FlakyStore.from_settings(settings.qdrant, dim=embedder.dim)
    migrate(store)
    store.failures = failures
    svc = Cdeq(settings, embedder=embedder, store=store)
    set_worker_service(svc)
    try:
        with start_worker(
            create_app(settings),
            pool="solo",
            perform_ping_check=False,
            loglevel="CRITICAL",
            shutdown_timeout=30,
        ):
            status = wait_finished(enqueue(collection, documents(n_docs), service=svc), svc)
        stored = store.count(collection) if store.collection_exists(collection) else 0
        return status, stored, store.failures
    finally:
        set_worker_service(None)
        svc.close()


def test_store_outage_is_retried_until_it_returns(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    settings = make_settings(tiny_model_dir, tmp_path / "qdrant")
    status, stored, unused = ingest_with_flaky_store(settings, embedder, 3, "flaky", 40)
    assert unused == 0  # the outage really happened, and was retried through
    assert (status.state, status.succeeded, status.failed) == ("done", 40, 0)
    assert stored == 40


def test_retries_exhausted_fail_the_job_with_reasons(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    settings = make_settings(tiny_model_dir, tmp_path / "qdrant", max_retries=1)
    status, stored, _ = ingest_with_flaky_store(settings, embedder, 10**6, "down", 10)
    assert (status.state, status.failed, status.succeeded, stored) == ("failed", 10, 0, 0)
    assert set(status.errors) == {f"doc-{i}" for i in range(10)}
    assert all("simulated Qdrant outage" in reason for reason in status.errors.values())


def test_bad_documents_reject_the_whole_call(service: Cdeq, clean_redis: redis.Redis) -> None:
    docs = [
        *documents(5),
        {"id": "doc-1", "text": "dup"},
        {"id": "e", "text": " "},
        {"text": "no id"},
    ]
    with pytest.raises(InvalidInput) as err:
        enqueue("rejected", docs, service=service)
    assert len(err.value.problems) == 3
    assert "documents[5].id: 'doc-1' duplicates documents[1].id" in err.value.problems
    assert clean_redis.dbsize() == 0  # nothing recorded, nothing queued
    with pytest.raises(InvalidInput, match="documents: must be a list of objects, got str"):
        enqueue("rejected", "not a list", service=service)  # type: ignore[arg-type]


def test_job_status_reports_chunks_and_unknown_jobs(worker: Cdeq) -> None:
    docs = [{"id": "long", "text": "word " * 900}, *documents(3)]
    status = wait_finished(enqueue("trunc", docs, service=worker), worker)
    # a real worker chunks the 900-token text in two (CDEQ_INGEST__CHUNKING=auto): nothing cut
    assert (status.state, status.truncated, status.chunks, status.warnings) == ("done", 0, 5, {})
    assert worker.store.count("trunc") == 5 and worker.store.count_documents("trunc") == 4
    with pytest.raises(NotFound):
        job_status("no-such-job", service=worker)


# ---- a worker process killed mid-batch --------------------------------------------------------------
@pytest.mark.slow
def test_worker_killed_mid_batch_redelivers_exactly_once(
    tiny_model_dir: Path, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    marker = tmp_path / "killed-pid"
    qdrant_path = tmp_path / "qdrant"
    env = {
        **os.environ,
        "CDEQ_REDIS__URL": REDIS_URL,
        "CDEQ_QDRANT__PATH": str(qdrant_path),
        "CDEQ_MODEL__NAME": str(tiny_model_dir),
        "CDEQ_MODEL__DEVICE": "cpu",
        "CDEQ_INGEST__BATCH_SIZE": "40",
        "CDEQ_TEST_KILL_MARKER": str(marker),
        "PYTHONPATH": str(ROOT),
    }
    settings = make_settings(tiny_model_dir, qdrant_path, batch_size=40)
    producer = Cdeq(settings)  # Redis only: never opens the worker's Qdrant folder
    docs = documents(120)
    log_path = tmp_path / "worker.log"
    try:
        with slow_worker(env, log_path) as worker:
            job_id = enqueue("killed", docs, service=producer)
            kill_mid_batch(worker, marker, log_path)  # the pool process, mid-batch
            status = wait_finished(job_id, producer, timeout=120)
    finally:
        producer.close()
    assert (status.state, status.total, status.succeeded, status.failed) == ("done", 120, 120, 0), (
        tmp_path / "worker.log"
    ).read_text()
    store = QdrantStore.from_settings(settings.qdrant, dim=64)
    try:
        assert store.count("killed") == 120
        assert set(store.get_documents("killed", [d["id"] for d in docs])) == {
            d["id"] for d in docs
        }
    finally:
        store.close()
