"""Context rebuilds under faults, with the same leases, delivery cap and reconciler as ingest
batches: lost or never-sent messages (a rebuild still completes, every document exactly once
in the new version), a batch that kills its worker on every delivery and one stuck past the
hard time limit (the rebuild is given up: job failed with the reason, new version removed,
live version untouched and searchable). Real Redis, real workers, local Qdrant, tiny model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker

from app.config import Settings
from app.deliveries import crashed_reason
from app.errors import StoreUnavailable
from app.ingest import ingest_documents, job_status
from app.lifecycle import rebuild_context
from app.model import CdeEmbedder
from app.query import search
from app.queue import INGEST_QUEUE, CeleryDispatcher
from app.reconcile import reconcile
from app.service import Cdeq
from app.store import point_id
from tests.helpers.builders import documents
from tests.integration.conftest import redis_url
from tests.integration.faults.conftest import Workers, finished, wait_for
from workers.celery_app import create_app, set_worker_service

REDIS_URL = redis_url(13)
FAST_INGEST = {"lease_ttl_s": 1.0, "heartbeat_s": 0.3, "reconcile_interval_s": 1.0}


@pytest.fixture()
def clean_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def _service(model: Path, qdrant: Path, embedder: Any = None, **ingest: Any) -> Cdeq:
    settings = Settings(
        model={"name": str(model), "device": "cpu"},
        redis={"url": REDIS_URL},
        qdrant={"path": str(qdrant)},
        ingest={"batch_size": 20, "retry_backoff_max_s": 1, **ingest},
        context={"auto_rebuild": False},  # each test starts its own rebuild
    )
    return Cdeq(settings, embedder=embedder) if embedder is not None else Cdeq(settings)


def _ids_once(svc: Cdeq, physical: str) -> list[str]:
    """The document ids stored in `physical`, sorted; asserts none is there twice."""
    records, _ = svc.store.client.scroll(physical, limit=10_000, with_payload=True)
    ids = [r.payload["document_id"] for r in records]  # type: ignore[index]
    assert len(ids) == len(set(ids)), "a document is stored twice"
    return sorted(ids)


def _versions(svc: Cdeq, physical: str) -> set[int]:
    records, _ = svc.store.client.scroll(physical, limit=10_000, with_payload=True)
    return {r.payload["context_version"] for r in records}  # type: ignore[index]


class FailOnce(CeleryDispatcher):
    """The real dispatcher, whose send number `at` raises as a Redis outage would."""

    def __init__(self, svc: Cdeq, at: int) -> None:
        super().__init__(svc.celery)
        self.calls, self.at = 0, at

    def send_rebuild_batch(self, job_id: str, index: int, request_id: str | None = None) -> None:
        self.calls += 1
        if self.calls == self.at:
            raise StoreUnavailable("simulated: Redis went away while queuing", retry_after_s=0.1)
        super().send_rebuild_batch(job_id, index, request_id)


@pytest.mark.parametrize("fault", ["messages_lost", "never_queued"])
def test_rebuild_whose_messages_are_lost_completes_through_the_reconciler(
    fault: str,
    tiny_model_dir: Path,
    embedder: CdeEmbedder,
    tmp_path: Path,
    clean_redis: redis.Redis,
) -> None:
    svc = _service(tiny_model_dir, tmp_path / "qdrant", embedder, **FAST_INGEST)
    docs = documents(100)
    ids = sorted(d["id"] for d in docs)
    try:
        assert ingest_documents("lost", docs, service=svc).succeeded == 100  # here, no queue
        if fault == "never_queued":
            svc.__dict__["dispatcher"] = FailOnce(svc, at=3)
        job_id = rebuild_context("lost", service=svc)  # 5 batches of 20 and the finish step
        if fault == "messages_lost":
            assert clean_redis.llen(INGEST_QUEUE) == 5
            clean_redis.delete(INGEST_QUEUE)  # as a Redis restart without them would
        else:
            assert clean_redis.llen(INGEST_QUEUE) == 2  # the third send failed
        del svc.__dict__["dispatcher"]
        assert job_status(job_id, service=svc).state == "queued"

        # No worker yet: once the job has been idle (or unsent) for a lease TTL, the reconciler
        # queues every batch not counted (the two sent ones too: a second run is skipped), not
        # the finish (the batch that completes the set queues it).
        report = wait_for(
            "the reconciler re-queued the rebuild",
            lambda: reconcile(service=svc, force=True).requeued,
        )
        assert report == [(job_id, i) for i in range(5)]

        set_worker_service(svc)
        with start_worker(
            create_app(svc.settings), pool="solo", perform_ping_check=False, loglevel="WARNING"
        ):
            status = wait_for("rebuild done", finished(lambda: job_status(job_id, service=svc)))
        assert (status.state, status.total, status.succeeded, status.failed) == (
            "done",
            100,
            100,
            0,
        ), status
        assert svc.store.resolve("lost") == "lost__c2"
        assert _ids_once(svc, "lost__c2") == ids  # 0 lost, 0 duplicated
        assert _versions(svc, "lost__c2") == {2}
        assert _ids_once(svc, "lost__c1") == ids  # the old version, kept for rollback
        assert svc.store.load_rebuild_marker("lost") is None
        assert svc.jobs.counters()["reconciled_batches"] >= 5  # type: ignore[attr-defined]
    finally:
        set_worker_service(None)
        svc.close()


def _start_rebuild_for_a_worker(
    model: Path, tmp_path: Path, embedder: CdeEmbedder, docs: list[dict[str, Any]], name: str
) -> tuple[Cdeq, str, list[tuple[str, float]]]:
    """Ingest `docs` here, search once, queue a rebuild, then hand the local Qdrant folder to
    the worker: (the producer, the job id, the search's hits)."""
    producer = _service(model, tmp_path / "qdrant", embedder)
    assert ingest_documents(name, docs, service=producer).succeeded == len(docs)
    hits = [(h.document_id, h.score) for h in search(name, docs[3]["text"], service=producer)]
    job_id = rebuild_context(name, service=producer)  # queued: no worker is up yet
    producer.store.close()  # local storage belongs to one process at a time
    del producer.__dict__["store"]
    return producer, job_id, hits


def _assert_live_version_untouched(
    model: Path,
    tmp_path: Path,
    embedder: CdeEmbedder,
    name: str,
    docs: list[dict[str, Any]],
    hits: list[tuple[str, float]],
) -> None:
    """Once the worker is gone: the rebuild left no trace and the live version is as it was."""
    checker = _service(model, tmp_path / "qdrant", embedder)
    try:
        _assert_untouched(checker, name, docs, hits)
    finally:
        checker.close()


def _assert_untouched(
    producer: Cdeq, name: str, docs: list[dict[str, Any]], hits: list[tuple[str, float]]
) -> None:
    assert producer.store.resolve(name) == f"{name}__c1"
    assert producer.store.physical_collections(name) == [f"{name}__c1"]  # the new one is gone
    assert producer.store.load_context(name, 2) is None
    assert producer.store.load_rebuild_marker(name) is None
    assert _ids_once(producer, f"{name}__c1") == sorted(d["id"] for d in docs)
    assert _versions(producer, f"{name}__c1") == {1}
    again = [(h.document_id, h.score) for h in search(name, docs[3]["text"], service=producer)]
    assert again == hits  # still searchable, the same answers


def _batch_of(name: str, docs: list[dict[str, Any]], document_id: str, size: int = 20) -> int:
    """The rebuild batch holding `document_id`: batches are cut from the sorted point ids."""
    order = sorted(point_id(name, d["id"]) for d in docs)
    return order.index(point_id(name, document_id)) // size


@pytest.mark.slow
def test_poison_rebuild_batch_gives_the_rebuild_up_after_the_delivery_cap(
    tiny_model_dir: Path,
    embedder: CdeEmbedder,
    tmp_path: Path,
    workers: Workers,
    clean_redis: redis.Redis,
) -> None:
    docs = documents(60)
    docs[25]["text"] = "POISON " + docs[25]["text"]  # kills the worker re-embedding it, every time
    producer, job_id, hits = _start_rebuild_for_a_worker(
        tiny_model_dir, tmp_path, embedder, docs, "poison"
    )
    try:
        workers.start(
            REDIS_URL, "poison", CDEQ_INGEST__MAX_DELIVERIES="2", CDEQ_CONTEXT__AUTO_REBUILD="false"
        )
        status = wait_for(
            "rebuild finished",
            finished(lambda: job_status(job_id, service=producer)),
            logs=workers.logs,
        )
        wait_for("new version removed", lambda: "given up" in workers.logs(), logs=workers.logs)
        workers.stop_all()
        assert status.state == "failed", status
        batch = _batch_of("poison", docs, "doc-25")
        assert status.reason.startswith(f"rebuild failed: batch {batch} (documents ["), status
        assert status.reason.endswith(f"20 in all): {crashed_reason(2)}"), status
        _assert_live_version_untouched(tiny_model_dir, tmp_path, embedder, "poison", docs, hits)
        counters = producer.jobs.counters()  # type: ignore[attr-defined]
        assert counters["redeliveries"] >= 1 and counters["failed_rebuilds"] == 1, counters
    finally:
        producer.close()


@pytest.mark.slow
def test_rebuild_batch_past_the_hard_time_limit_gives_the_rebuild_up(
    tiny_model_dir: Path,
    embedder: CdeEmbedder,
    tmp_path: Path,
    workers: Workers,
    clean_redis: redis.Redis,
) -> None:
    docs = documents(60)
    docs[45]["text"] = "STUCK " + docs[45]["text"]  # its batch never ends by itself
    producer, job_id, hits = _start_rebuild_for_a_worker(
        tiny_model_dir, tmp_path, embedder, docs, "stuck"
    )
    try:
        workers.start(
            REDIS_URL,
            "stuck",
            CDEQ_INGEST__TASK_SOFT_TIME_LIMIT_S="15",
            CDEQ_INGEST__TASK_TIME_LIMIT_S="16",
            CDEQ_CONTEXT__AUTO_REBUILD="false",
        )
        status = wait_for(
            "rebuild finished",
            finished(lambda: job_status(job_id, service=producer)),
            logs=workers.logs,
        )
        wait_for("new version removed", lambda: "given up" in workers.logs(), logs=workers.logs)
        workers.stop_all()
        batch = _batch_of("stuck", docs, "doc-45")
        assert status.state == "failed", status
        assert status.reason == (
            f"rebuild failed: batch {batch}: took longer than the hard time limit (16s)"
        ), status
        _assert_live_version_untouched(tiny_model_dir, tmp_path, embedder, "stuck", docs, hits)
        assert producer.jobs.counters()["failed_rebuilds"] == 1  # type: ignore[attr-defined]
    finally:
        producer.close()
