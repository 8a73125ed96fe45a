"""Context lifecycle with real parts: Redis, a Celery worker (in a thread, or a separate process
that is SIGKILLed), Qdrant local mode and the tiny model. Rebuild, swap, rollback, prune, and
documents ingested and deleted while a rebuild runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from celery.contrib.testing.worker import start_worker

from app.errors import Conflict
from app.ingest import enqueue, ingest_documents
from app.lifecycle import context_info, prune, rebuild_context, rollback
from app.model import CdeEmbedder
from app.query import delete_documents, search
from app.service import Cdeq
from app.store import QdrantStore, point_id
from tests.helpers.builders import (
    ROOT,
    corpus,
    cosine,
    kill_mid_batch,
    make_settings,
    slow_worker,
    wait_finished,
)
from tests.helpers.faults import CountingEmbedder, PausingEmbedder
from tests.integration.conftest import flushed, redis_url
from workers.celery_app import create_app, set_worker_service

REDIS_URL = redis_url(12)


@pytest.fixture()
def clean_redis() -> Iterator[redis.Redis]:
    yield from flushed(12)


def _service(model: Path, qdrant: Path, embedder: Any, **ingest: Any) -> Cdeq:
    settings = make_settings(model, qdrant, redis_url=REDIS_URL, **ingest)
    settings.context.auto_rebuild = False  # these tests start every rebuild themselves
    return Cdeq(settings, embedder=embedder)


def _worker(svc: Cdeq) -> Any:
    set_worker_service(svc)
    return start_worker(
        create_app(svc.settings),
        pool="solo",
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    )


def _vectors(svc: Cdeq, physical: str) -> dict[str, tuple[str, np.ndarray]]:
    """document id → (text, stored vector) of every point of `physical`; asserts no duplicate."""
    records, _ = svc.store.client.scroll(physical, limit=10_000, with_vectors=True)
    ids = [r.payload["document_id"] for r in records]  # type: ignore[index]
    assert len(ids) == len(set(ids)), "duplicate documents"
    return {
        # The dense vector is the unnamed one ("") beside the `bm25` sparse vector.
        r.payload["document_id"]: (r.payload["text"], np.asarray(r.vector[""]))  # type: ignore[index,call-overload]
        for r in records
    }


def test_rebuild_from_the_whole_collection_then_rollback_and_prune(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    spy = CountingEmbedder(embedder)
    svc = _service(tiny_model_dir, tmp_path / "qdrant", spy, batch_size=64)
    docs = corpus(300)
    try:
        with _worker(svc):
            assert wait_finished(enqueue("papers", docs[:40], service=svc), svc).state == "done"
            assert wait_finished(enqueue("papers", docs[40:], service=svc), svc).state == "done"
            before = context_info("papers", service=svc)
            assert (before.version, before.source, before.points_at_build) == (1, "corpus", 40)
            assert (before.points_now, before.growth) == (300, 7.5)
            old_hits = search("papers", docs[7]["text"], top_k=5, service=svc)
            spy.documents_embedded.clear()
            contexts_before = spy.context_calls

            job_id = rebuild_context("papers", sample_size=100, service=svc)
            status = wait_finished(job_id, svc)
            assert (status.state, status.total, status.succeeded, status.failed) == (
                "done",
                300,
                300,
                0,
            )
            # stage 1 once, stage 2 once per document
            assert spy.context_calls == contexts_before + 1
            assert sorted(spy.documents_embedded) == sorted(d["text"] for d in docs)
            # stage 1 read a sample of all 300 documents, not of the first job's 40
            record = svc.store.load_context("papers", 2)
            assert record is not None and record.state == "ready"
            sampled = set(record.sampled_ids)
            assert len(sampled) == len(record.sampled_ids) == spy.context_size  # distinct
            assert sampled <= {d["id"] for d in docs}
            assert len(sampled - {d["id"] for d in docs[:40]}) >= spy.context_size // 2
            # swapped; the old version is kept, untouched
            after = context_info("papers", service=svc)
            assert (after.version, after.source, after.trigger) == (2, "rebuild", "manual")
            assert (after.points_at_build, after.growth, after.previous_versions) == (300, 1.0, [1])
            assert svc.store.resolve("papers") == "papers__c2"
            assert svc.store.count_physical("papers__c1") == 300
            hits = search("papers", docs[7]["text"], top_k=5, service=svc)
            assert {h.payload["context_version"] for h in hits} == {2}

            assert rollback("papers", service=svc) == 1
            assert svc.store.resolve("papers") == "papers__c1"
            again = search("papers", docs[7]["text"], top_k=5, service=svc)
            assert [(h.document_id, h.score) for h in again] == [
                (h.document_id, h.score) for h in old_hits
            ]
            assert context_info("papers", service=svc).previous_versions == [2]

            assert prune("papers", service=svc) == [2]
            assert svc.store.physical_collections("papers") == ["papers__c1"]
            assert svc.store.load_context("papers", 2) is None
            assert context_info("papers", service=svc).previous_versions == []
    finally:
        set_worker_service(None)
        svc.close()


def test_ingest_and_delete_during_a_rebuild_end_up_in_the_new_version(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    gated = PausingEmbedder(embedder, pause_at=2)  # the worker stops in the rebuild's 2nd batch
    svc = _service(tiny_model_dir, tmp_path / "qdrant", gated, batch_size=40)
    first = corpus(120)
    more = corpus(220, topic="mountain")[120:]  # 100 new ids, other texts
    try:
        ingest_documents("live", first, service=svc)  # here, not through the worker
        with _worker(svc):
            job_id = rebuild_context("live", service=svc)
            assert gated.paused.wait(60), "the rebuild never reached its second batch"
            with pytest.raises(Conflict, match="already running"):
                rebuild_context("live", service=svc)
            # while the rebuild is held mid-way: 100 new documents, 20 deletions (old and new)
            assert ingest_documents("live", more, service=svc).succeeded == 100
            gone = [d["id"] for d in first[::12]] + [d["id"] for d in more[::10]]
            assert delete_documents("live", gone, service=svc) == 20
            assert svc.store.resolve("live") == "live__c1"  # not swapped before it is complete
            gated.release.set()
            assert wait_finished(job_id, svc).state == "done"
        assert svc.store.resolve("live") == "live__c2"
        expected = {d["id"] for d in first + more} - set(gone)
        assert svc.store.count("live") == len(expected) == 200
        stored = _vectors(svc, "live__c2")
        assert set(stored) == expected
        context = svc.contexts.at_version("live", 2)
        ids = sorted(stored)
        fresh = embedder.embed_documents([stored[i][0] for i in ids], context.dataset_embeddings)
        similarity = cosine(np.stack([stored[i][1] for i in ids]), fresh.vectors)
        assert similarity.min() >= 0.99999
        assert svc.store.load_rebuild_marker("live") is None
    finally:
        gated.release.set()
        set_worker_service(None)
        svc.close()


def test_late_writes_to_the_old_version_are_caught_up_before_the_swap(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    """A write that reached only the live version (an ingest batch that looked for a rebuild
    before its context existed) is found by the catch-up pass, as is a changed document."""
    gated = PausingEmbedder(embedder, pause_at=1)
    svc = _service(tiny_model_dir, tmp_path / "qdrant", gated, batch_size=64)
    docs = corpus(60)
    try:
        ingest_documents("late", docs, service=svc)
        with _worker(svc):
            job_id = rebuild_context("late", service=svc)
            assert gated.paused.wait(60)
            # written straight into version 1 only, behind the dual write's back
            live = svc.contexts.current("late")
            from app.store import PointRecord

            vector = embedder.embed_documents(["a late text"], live.dataset_embeddings).vectors[0]
            svc.store.upsert(
                "late__c1",
                [PointRecord("late-1", vector, "a late text", {}, "h-late", 1)],
            )
            gated.release.set()
            assert wait_finished(job_id, svc).state == "done"
        assert svc.store.resolve("late") == "late__c2"
        assert svc.store.count("late") == 61
        assert "late-1" in svc.store.get_documents("late", ["late-1"])
        assert svc.store.count_physical("late__c1") == svc.store.count_physical("late__c2")
        assert point_id("late", "late-1") in svc.store.point_hashes("late__c2")
    finally:
        gated.release.set()
        set_worker_service(None)
        svc.close()


@pytest.mark.slow
def test_worker_killed_mid_rebuild_resumes_and_completes(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    marker = tmp_path / "killed-pid"
    qdrant_path = tmp_path / "qdrant"
    docs = corpus(120)
    producer = _service(tiny_model_dir, qdrant_path, embedder, batch_size=40)
    ingest_documents("killed", docs, service=producer)
    job_id = rebuild_context("killed", service=producer)  # queued: the worker is not up yet
    producer.store.close()  # local storage belongs to one process: hand it to the worker
    del producer.__dict__["store"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CDEQ_")},
        "CDEQ_REDIS__URL": REDIS_URL,
        "CDEQ_QDRANT__PATH": str(qdrant_path),
        "CDEQ_MODEL__NAME": str(tiny_model_dir),
        "CDEQ_MODEL__DEVICE": "cpu",
        "CDEQ_INGEST__BATCH_SIZE": "40",
        "CDEQ_CONTEXT__AUTO_REBUILD": "false",
        "CDEQ_TEST_KILL_MARKER": str(marker),
        "CDEQ_TEST_KILL_TARGET": "killed__c2",
        "PYTHONPATH": str(ROOT),
    }
    log_path = tmp_path / "worker.log"
    with slow_worker(env, log_path) as worker:
        kill_mid_batch(worker, marker, log_path)  # the pool process, mid-batch
        try:
            status = wait_finished(job_id, producer, timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log_path.read_text()[:6000]}") from None
    try:
        assert (status.state, status.succeeded) == ("done", 120), (
            tmp_path / "worker.log"
        ).read_text()
        store = QdrantStore.from_settings(producer.settings.qdrant, dim=embedder.dim)
        try:
            assert store.resolve("killed") == "killed__c2"
            ids = {d["id"] for d in docs}
            assert store.count("killed") == 120
            assert set(store.get_documents("killed", sorted(ids))) == ids
            # the old version was never written by the rebuild: still all version-1 points
            old, _ = store.client.scroll("killed__c1", limit=1000, with_payload=True)
            assert len(old) == 120
            assert {r.payload["context_version"] for r in old} == {1}  # type: ignore[index]
        finally:
            store.close()
    finally:
        producer.close()
