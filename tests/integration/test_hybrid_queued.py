"""Hybrid search in queued mode (#18): a real Celery worker writes the BM25 vectors with each
batch, and a queued rebuild carries them over. Real Redis, local Qdrant, the tiny model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker

from app.ingest import enqueue
from app.lifecycle import rebuild_context
from app.model import CdeEmbedder
from app.query import search
from app.service import Cdeq
from tests.helpers.builders import documents, make_settings, wait_finished
from tests.integration.conftest import flushed, redis_url
from workers.celery_app import create_app, set_worker_service

pytestmark = pytest.mark.slow


@pytest.fixture()
def worker(tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path) -> Iterator[Cdeq]:
    for _ in flushed(14):
        svc = Cdeq(
            make_settings(tiny_model_dir, tmp_path / "qdrant", redis_url=redis_url(14)),
            embedder=embedder,
        )
        app = create_app(svc.settings)
        set_worker_service(svc)
        with start_worker(
            app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=30
        ):
            yield svc
        set_worker_service(None)
        svc.close()


def stored_sparse(svc: Cdeq, physical: str) -> dict[str, tuple[tuple[int, ...], tuple[float, ...]]]:
    records, _ = svc.store.client.scroll(
        physical, limit=10_000, with_payload=["document_id"], with_vectors=["bm25"]
    )
    out = {}
    for r in records:
        if isinstance(r.vector, dict) and "bm25" in r.vector:
            v = r.vector["bm25"]
            out[str((r.payload or {})["document_id"])] = (tuple(v.indices), tuple(v.values))  # type: ignore[union-attr]
    return out


def test_queued_batches_write_sparse_vectors_and_a_queued_rebuild_carries_them(
    worker: Cdeq,
) -> None:
    svc = worker
    docs = documents(100, seed=6)
    status = wait_finished(enqueue("queued", docs, service=svc), svc)
    assert (status.state, status.succeeded, status.batches) == ("done", 100, 4)
    stats = svc.store.load_bm25_stats("queued__c1")
    assert (stats.documents, stats.terms) == (
        100,
        sum(len(t) for t in svc.bm25.terms([str(d["text"]) for d in docs])),
    )
    before = stored_sparse(svc, "queued__c1")
    assert len(before) == 100
    text = str(docs[33]["text"])
    for mode in ("sparse", "hybrid"):
        hits = search("queued", text, 5, {"metadata.even": False}, mode=mode, service=svc)
        assert hits[0].document_id == "doc-33" and all(
            not h.payload["metadata"]["even"] for h in hits
        )

    rebuilt = wait_finished(rebuild_context("queued", service=svc), svc)
    assert rebuilt.state == "done", rebuilt
    assert svc.store.resolve("queued") == "queued__c2"
    after = stored_sparse(svc, "queued__c2")
    assert after == before  # all 100 carried over as they were
    assert svc.store.load_bm25_stats("queued__c2") == stats
    assert search("queued", text, 3, mode="sparse", service=svc)[0].document_id == "doc-33"
