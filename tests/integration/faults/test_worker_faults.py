"""Workers that die or hang: the whole worker SIGKILLed mid-batch, a batch that kills its
pool process every time, a batch stuck past the hard time limit. Each job still finishes,
with every document stored exactly once or failed with its reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.config import Settings
from app.ingest import crashed_reason, enqueue, job_status
from app.service import Cdeq
from tests.helpers.builders import documents
from tests.integration.conftest import redis_url
from tests.integration.faults.conftest import Workers, finished, stored_ids, wait_for

REDIS_URL = redis_url(13)


@pytest.fixture()
def producer(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Cdeq]:
    """The side that enqueues: Redis only, it never opens the workers' Qdrant folder."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    settings = Settings(
        model={"name": str(tiny_model_dir), "device": "cpu"},
        redis={"url": REDIS_URL},
        qdrant={"path": str(tmp_path / "qdrant")},
        ingest={"batch_size": 20},
    )
    svc = Cdeq(settings)
    yield svc
    svc.close()
    client.flushdb()
    client.close()


@pytest.mark.slow
def test_whole_worker_sigkill_is_recovered_by_another_worker(
    producer: Cdeq, workers: Workers, tmp_path: Path
) -> None:
    marker = tmp_path / "hung-pid"
    first = workers.start(REDIS_URL, "hang_once", CDEQ_TEST_MARKER=str(marker))
    docs = documents(100)
    job_id = enqueue("crash", docs, service=producer)
    wait_for("the worker reached its first upsert", marker.exists, logs=workers.logs)
    workers.kill(first)  # main process and pool process: nothing is given back to the broker
    assert not job_status(job_id, service=producer).finished

    workers.start(REDIS_URL)  # its reconciler finds the expired lease and re-queues the batch
    status = wait_for(
        "job done", finished(lambda: job_status(job_id, service=producer)), logs=workers.logs
    )
    workers.stop_all()
    assert (status.state, status.succeeded, status.failed) == ("done", 100, 0), status
    ids = [d["id"] for d in docs]
    assert stored_ids(tmp_path / "qdrant", "crash", ids) == sorted(ids)
    counters = producer.jobs.counters()  # type: ignore[attr-defined]
    assert counters["expired_leases"] >= 1 and counters["reconciled_batches"] >= 1


@pytest.mark.slow
def test_poison_batch_fails_after_max_deliveries_and_the_rest_succeed(
    producer: Cdeq, workers: Workers, tmp_path: Path
) -> None:
    docs = documents(60)
    docs[25]["text"] = "POISON " + docs[25]["text"]  # batch 1 of 3 kills its worker every time
    workers.start(REDIS_URL, "poison", CDEQ_INGEST__MAX_DELIVERIES="2")
    job_id = enqueue("poison", docs, service=producer)
    status = wait_for(
        "job finished", finished(lambda: job_status(job_id, service=producer)), logs=workers.logs
    )
    workers.stop_all()
    assert (status.state, status.succeeded, status.failed) == ("done_with_errors", 40, 20), status
    poisoned = {d["id"] for d in docs[20:40]}
    assert set(status.errors) == poisoned
    assert set(status.errors.values()) == {crashed_reason(2)}
    stored = [d["id"] for d in docs if d["id"] not in poisoned]
    assert stored_ids(tmp_path / "qdrant", "poison", [d["id"] for d in docs]) == sorted(stored)
    assert producer.jobs.counters()["redeliveries"] >= 1  # type: ignore[attr-defined]


@pytest.mark.slow
def test_hard_time_limit_fails_the_batch_and_the_job_finishes(
    producer: Cdeq, workers: Workers, tmp_path: Path
) -> None:
    docs = documents(60)
    # batch 2 of 3 never ends by itself; the soft limit (15 s) leaves normal batches room on a
    # loaded 2-core machine
    docs[45]["text"] = "STUCK " + docs[45]["text"]
    workers.start(
        REDIS_URL,
        "stuck",
        CDEQ_INGEST__TASK_SOFT_TIME_LIMIT_S="15",
        CDEQ_INGEST__TASK_TIME_LIMIT_S="16",
    )
    job_id = enqueue("stuck", docs, service=producer)
    status = wait_for(
        "job finished", finished(lambda: job_status(job_id, service=producer)), logs=workers.logs
    )
    workers.stop_all()
    assert (status.state, status.succeeded, status.failed) == ("done_with_errors", 40, 20), status
    stuck = {d["id"] for d in docs[40:60]}
    assert set(status.errors) == stuck
    assert set(status.errors.values()) == {"took longer than the hard time limit (16s)"}
    ids = [d["id"] for d in docs]
    assert stored_ids(tmp_path / "qdrant", "stuck", ids) == sorted(i for i in ids if i not in stuck)


def test_worker_refuses_a_local_folder_another_process_owns(
    workers: Workers, tmp_path: Path
) -> None:
    from app.store import QdrantStore

    qdrant = tmp_path / "qdrant"
    from app.config import QdrantSettings

    holder = QdrantStore.from_settings(QdrantSettings(path=str(qdrant)), dim=64)
    try:
        proc = workers.start(REDIS_URL)
        assert proc.wait(60) == 5, workers.logs()
    finally:
        holder.close()
    assert "cannot be opened" in workers.logs() and str(qdrant) in workers.logs()


def test_worker_refuses_pools_without_time_limits(tmp_path: Path) -> None:
    from tests.helpers.builders import cdeq

    result = cdeq("worker", "--pool", "solo", cwd=tmp_path, env={"CDEQ_REDIS__URL": REDIS_URL})
    assert result.returncode == 2
    assert "--pool solo" in result.stderr and "time limits" in result.stderr
