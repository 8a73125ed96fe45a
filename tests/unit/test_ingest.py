"""Ingest use cases in in-process mode (no Redis): `submit`, the batch failure policy, the
Celery task called directly, and contexts built once. Real model, real local Qdrant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.errors import ContextNotReady, InvalidInput, NotFound, StoreUnavailable
from app.ingest import Batch, batch_failed, ingest_documents, job_status, submit
from app.jobs import BatchOutcome, JobState
from app.model import CdeEmbedder
from app.model.generic import generic_texts
from app.query import create_collection, delete_documents, search
from app.service import Cdeq
from tests.helpers.builders import documents, make_settings
from tests.helpers.faults import CountingEmbedder, FlakyStore, PoisonEmbedder


@pytest.fixture()
def svc(tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path) -> Iterator[Cdeq]:
    service = Cdeq(make_settings(tiny_model_dir, tmp_path / "qdrant"), embedder=embedder)
    yield service
    service.close()


def test_in_process_mode_runs_in_process(svc: Cdeq) -> None:
    seen: list[int] = []
    job_id = submit("local", documents(100), service=svc, on_progress=lambda d, t: seen.append(d))
    status = job_status(job_id, service=svc)
    assert (status.state, status.succeeded, status.truncated, status.batches_done) == (
        "done",
        100,
        0,
        4,
    )
    assert status.id == job_id and len(job_id) == 32
    with pytest.raises(InvalidInput, match="got str"):
        submit("local", "not a list", service=svc)  # type: ignore[arg-type]
    assert seen[-1] == 100 and seen == sorted(seen)
    assert search("local", documents(100)[7]["text"], service=svc)[0].document_id == "doc-7"
    with pytest.raises(NotFound, match="job 'x' not found"):
        job_status("x", service=svc)
    assert delete_documents("local", ["doc-7", "doc-8", "nope"], service=svc) == 2
    assert svc.store.count("local") == 98
    with pytest.raises(NotFound, match="does not exist"):
        search("missing", "text", service=svc)
    with pytest.raises(InvalidInput, match="top_k"):
        search("local", "text", top_k=0, service=svc)
    with pytest.raises(InvalidInput, match="text"):
        search("local", "  ", service=svc)


def test_ingest_documents_returns_the_finished_status(svc: Cdeq) -> None:
    status = ingest_documents("direct", documents(40), service=svc)
    assert (status.state, status.succeeded) == ("done", 40)
    assert job_status(status.id, service=svc) == status


def test_small_first_job_uses_the_generic_context(svc: Cdeq) -> None:
    ingest_documents("few", documents(5), service=svc)
    ingest_documents("also-few", documents(7, seed=3), service=svc)
    ingest_documents("many", documents(60), service=svc)
    few, many = svc.contexts.current("few"), svc.contexts.current("many")
    assert few.source == "generic" and many.source == "corpus"
    np.testing.assert_allclose(few.dataset_embeddings, svc.contexts.generic(), atol=1e-6)
    # the generic context ran stage 1 once for both small collections
    assert svc.contexts.builds == 2


def test_create_collection_with_explicit_context(svc: Cdeq, embedder: CdeEmbedder) -> None:
    corpus = generic_texts(50, seed=5)
    assert create_collection("explicit", context_texts=corpus, service=svc) == 1
    expected = embedder.embed_context(corpus)
    np.testing.assert_allclose(
        svc.contexts.current("explicit").dataset_embeddings, expected, atol=1e-6
    )
    ingest_documents("explicit", documents(10), service=svc)
    assert svc.contexts.current("explicit").version == 1  # the given context was kept
    with pytest.raises(InvalidInput, match="already exists"):
        create_collection("explicit", context_texts=corpus, service=svc)
    with pytest.raises(InvalidInput, match="fewer than the minimum"):
        create_collection("tiny-ctx", context_texts=["a", "b"], service=svc)


def test_context_is_built_once_and_cached(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    spy = CountingEmbedder(embedder)
    service = Cdeq(make_settings(tiny_model_dir, tmp_path / "q"), embedder=spy)  # type: ignore[arg-type]
    try:
        submit("once", documents(100), service=service)
        submit("once", documents(50, seed=4), service=service)
        assert spy.context_calls == 1 and service.contexts.builds == 1
        assert service.contexts.current("once") is service.contexts.current("once")  # cached
    finally:
        service.close()


def test_a_failing_batch_fails_its_documents_and_the_job_still_finishes(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    docs = documents(96)
    poison = PoisonEmbedder(embedder, poison=docs[40]["text"])
    service = Cdeq(make_settings(tiny_model_dir, tmp_path / "q"), embedder=poison)  # type: ignore[arg-type]
    try:
        status = job_status(submit("mixed", docs, service=service), service=service)
    finally:
        service.close()
    assert (status.state, status.succeeded, status.failed, status.batches_done) == (
        "done_with_errors",
        64,
        32,
        3,
    )
    assert set(status.errors) == {f"doc-{i}" for i in range(32, 64)}
    assert all(r == "simulated: the model refuses this text" for r in status.errors.values())


def test_a_store_outage_in_process_is_retried(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    settings = make_settings(tiny_model_dir, tmp_path / "q")
    store = FlakyStore.from_settings(settings.qdrant, dim=embedder.dim)
    store.failures = 2
    service = Cdeq(settings, embedder=embedder, store=store)
    try:
        from migrations import migrate

        migrate(store)
        status = job_status(submit("flaky", documents(10), service=service), service=service)
    finally:
        service.close()
    assert store.failures == 0 and (status.state, status.succeeded) == ("done", 10)


# ---- the failure policy, one exception at a time ----------------------------------------------
@pytest.fixture()
def recorded(svc: Cdeq) -> Batch:
    svc.jobs.create("j1", "c", 2, 1, [])
    return Batch("j1", "c", 0, [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}])


@pytest.mark.parametrize(
    "exc", [StoreUnavailable("down", retry_after_s=3), ContextNotReady("busy")]
)
def test_transient_errors_are_retried_with_backoff_then_fail(
    svc: Cdeq, recorded: Batch, exc: Exception
) -> None:
    limit = svc.settings.ingest.max_retries
    cap = svc.settings.ingest.retry_backoff_max_s
    countdowns = [batch_failed(svc, recorded, exc, retries=r) for r in range(limit)]
    assert all(c is not None and 0 < c <= max(cap, 3) for c in countdowns)
    assert job_status("j1", service=svc).state == "queued"  # nothing recorded yet
    assert batch_failed(svc, recorded, exc, retries=limit) is None
    status = job_status("j1", service=svc)
    assert status.state == "failed" and status.errors["a"] == (
        f"failed after {limit} retries (CDEQ_INGEST__MAX_RETRIES): {exc}"
    )


def test_input_errors_and_bugs_fail_the_batch_at_once(svc: Cdeq, recorded: Batch) -> None:
    assert batch_failed(svc, recorded, InvalidInput("bad text"), retries=0) is None
    assert job_status("j1", service=svc).errors == {"a": "bad text", "b": "bad text"}
    svc.jobs.create("j2", "c", 2, 1, [])
    bug = Batch("j2", "c", 0, recorded.documents)
    assert batch_failed(svc, bug, KeyError("oops"), retries=0) is None
    assert job_status("j2", service=svc).errors["a"] == "internal error: KeyError: 'oops'"


# ---- the in-memory job store ------------------------------------------------------------------
def test_memory_job_store_counts_each_batch_once(svc: Cdeq) -> None:
    jobs = svc.jobs
    jobs.create("j", "c", 3, 2, [{"id": "a", "text": "t"}])
    assert jobs.context_sample("j") == [{"id": "a", "text": "t"}]
    jobs.mark_running("j")
    assert jobs.status("j").state == JobState.RUNNING
    assert jobs.record_batch("j", 0, BatchOutcome(succeeded=2))
    assert not jobs.record_batch("j", 0, BatchOutcome(succeeded=2))  # a re-delivery counts nothing
    assert jobs.batch_done("j", 0) and not jobs.batch_done("j", 1)
    assert jobs.record_batch("j", 1, BatchOutcome.all_failed(["c"], "why"))
    status = jobs.status("j")
    assert (status.state, status.succeeded, status.failed, status.batches_done) == (
        "done_with_errors",
        2,
        1,
        2,
    )
    jobs.mark_running("j")  # never moves a finished job back
    assert jobs.status("j").state == "done_with_errors"
    with pytest.raises(NotFound):
        jobs.status("nope")


# ---- the Celery task, called directly (no broker) ------------------------------------------------
def test_worker_task_stores_a_batch_and_fails_a_bad_one(
    svc: Cdeq, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from workers.celery_app import create_app, set_worker_service

    # make_celery wants a broker URL; apply() runs the task here and never connects to it.
    settings = make_settings(tiny_model_dir, tmp_path / "unused", redis_url="redis://127.0.0.1:1/0")
    app = create_app(settings)
    task = app.tasks["cdeq.ingest_batch"]
    docs = documents(40)
    svc.jobs.create("t1", "tasks", 40, 1, docs)
    set_worker_service(svc)
    try:
        result: Any = task.apply(args=["t1", "tasks", 0, docs]).get()
        again: Any = task.apply(args=["t1", "tasks", 0, docs]).get()
        svc.jobs.create("t2", "tasks", 1, 1, [])
        bad: Any = task.apply(args=["t2", "tasks", 0, [{"id": "x"}]]).get()  # no text: a bug
    finally:
        set_worker_service(None)
    assert result == {"state": "done", "succeeded": 40} and again == {"state": "already_done"}
    assert svc.store.count("tasks") == 40
    assert bad == {"state": "failed"}
    assert job_status("t2", service=svc).errors["x"].startswith("internal error: KeyError")
