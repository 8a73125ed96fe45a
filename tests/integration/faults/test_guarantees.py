"""Recovery guarantees, each pinned by a test that fails when its mechanism alone is removed
(checked by removing it: the pairs are listed below and in docs/architecture.md).

mechanism (where) → test
- retry limit: tasks registered with Celery's max_retries=None, the policy stops at
  CDEQ_INGEST__MAX_RETRIES (workers/celery_app.py `create_app`, app/ingest.py `batch_failed`)
  → test_retry_limit_holds_under_a_stale_lock
- a Redis fault while recording is not a crash (workers/celery_app.py `_Keeper.defer`)
  → test_redis_fault_while_recording_is_not_counted_as_a_crash
- no lease is claimed within a lease TTL of a Redis restart (app/reconcile.py, step 1's
  uptime check) → test_leases_are_not_claimed_right_after_a_redis_restart
- the fingerprint check on every write into a version (app/contexts.py
  `writer_fingerprint`, called by app/ingest.py `store_documents` and app/rebuild.py
  `write_stored`) → test_a_rebuild_write_by_another_model_is_refused
- the finish verifies every point's model before the swap (app/rebuild.py `verify_version`)
  → test_the_finish_refuses_a_version_holding_another_models_vectors
- rollback verifies counts before its swap, as a rebuild's finish (app/lifecycle.py
  `rollback` → app/rebuild.py `verify_version`) → test_rollback_refuses_an_incomplete_version
- a worker holds its local folder from its start (app/cli/workers.py `hold_local_folder`)
  → test_a_second_worker_on_the_same_local_folder_exits_5_at_once
- orphan rebuild markers are cleared by the reconciler (app/reconcile.py
  `_clear_orphan_markers`) → test_an_orphan_rebuild_marker_is_cleared_with_its_version
- the heartbeat renews a running batch's lease (workers/celery_app.py `_Keeper._run` →
  `renew_leases`) → test_a_batch_longer_than_the_lease_ttl_keeps_its_lease
- an expired lease is queued again (app/reconcile.py step 1), the idle-job path unable to mask
  it (another batch of the job waits in the queue) → test_an_expired_lease_is_requeued
- the Lua exactly-once record (app/jobs/lua.py RECORD_BATCH's SADD guard)
  → test_the_same_batch_recorded_twice_at_once_counts_once
- the dual write during a rebuild (app/rebuild.py `mirror_documents`), checked before the
  finish's catch-up could mask it → test_an_ingest_during_a_rebuild_reaches_the_new_version
- the swap count check (app/rebuild.py `verify_version`), the catch-up's scan misled
  → test_the_finish_refuses_a_version_short_of_documents
- the reconciler decides per job whether its messages wait (app/reconcile.py, app/queue.py
  `queued_jobs`) → test_lost_messages_are_requeued_while_other_jobs_wait_in_the_queue

Real Redis, a real Celery worker in a thread of this test (solo pool), local Qdrant, the tiny
model; leases, heartbeats and the reconciler run with short settings.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker

from app.cli.workers import hold_local_folder
from app.config import QdrantSettings, Settings
from app.deliveries import begin
from app.errors import Conflict, ContextNotReady, ModelMismatch, StoreUnavailable
from app.ingest import enqueue, ingest_documents, job_status
from app.jobs import BatchOutcome, RedisJobStore
from app.lifecycle import context_info, drop_collection, rebuild_context, rollback
from app.locks import LOCK_KEY
from app.model import CdeEmbedder
from app.model.tiny import make_checkpoint
from app.queue import INGEST_QUEUE
from app.rebuild_batches import RebuildBatch, run_rebuild_batch
from app.reconcile import reconcile
from app.service import Cdeq
from app.store import PointRecord, QdrantStore, point_id
from migrations import migrate
from tests.helpers.builders import ROOT, documents
from tests.integration.conftest import redis_url
from tests.integration.faults.conftest import RedisServer, Workers, finished, wait_for
from workers.celery_app import _keeper, create_app, set_worker_service

REDIS_URL = redis_url(13)
FAST = {
    "lease_ttl_s": 1.0,
    "heartbeat_s": 0.3,
    "reconcile_interval_s": 0.5,
    "retry_backoff_max_s": 1,
    "context_lock_wait_s": 0.2,
}


@pytest.fixture()
def clean_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def _service(model: Path, qdrant: Path, embedder: Any, jobs: Any = None, **ingest: Any) -> Cdeq:
    settings = Settings(
        model={"name": str(model), "device": "cpu"},
        redis={"url": REDIS_URL},
        qdrant={"path": str(qdrant)},
        ingest={"batch_size": 20, **FAST, **ingest},
        context={"auto_rebuild": False},
    )
    return Cdeq(settings, embedder=embedder, jobs=jobs)


@contextmanager
def _worker(svc: Cdeq) -> Iterator[Cdeq]:
    """A real Celery worker (solo pool) in a thread, sharing `svc` (local Qdrant is one
    process's); its keeper renews leases and runs the reconciler."""
    set_worker_service(svc)
    try:
        with start_worker(
            create_app(svc.settings),
            pool="solo",
            perform_ping_check=False,
            loglevel="WARNING",
            shutdown_timeout=30,
        ):
            yield svc
    finally:
        set_worker_service(None)
        # The keeper thread holds this service: stop it before the next test's worker, or it
        # goes on reconciling (and re-queuing) that test's jobs with this service.
        _keeper.shutdown()
        if _keeper.thread is not None:
            _keeper.thread.join(30)


def _counters(svc: Cdeq) -> dict[str, int]:
    assert isinstance(svc.jobs, RedisJobStore)
    return svc.jobs.counters()


# ---- retry limits ---------------------------------------------------------------------------------
def test_retry_limit_holds_under_a_stale_lock(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    """A context lock held (by a dead holder) longer than every retry: the job fails with the
    reason after CDEQ_INGEST__MAX_RETRIES retries (more than Celery's own default of 3), with
    no lease expiry or re-delivery involved."""
    svc = _service(tiny_model_dir, tmp_path / "qdrant", embedder, max_retries=4)
    clean_redis.set(LOCK_KEY.format("stale"), "dead-holder", px=30 * 60 * 1000)
    try:
        with _worker(svc):
            job_id = enqueue("stale", documents(10), service=svc)
            status = wait_for(
                "job failed", finished(lambda: job_status(job_id, service=svc)), timeout=30
            )
        assert (status.state, status.failed) == ("failed", 10), status
        assert set(status.errors.values()) == {
            "failed after 4 retries (CDEQ_INGEST__MAX_RETRIES): the context of 'stale' is "
            "being built by another worker"
        }
        counters = _counters(svc)
        assert counters.get("retries_exhausted") == 1, counters
        assert counters.get("expired_leases", 0) == 0 and counters.get("redeliveries", 0) == 0
    finally:
        svc.close()


def test_leases_are_not_claimed_right_after_a_redis_restart(
    private_redis: RedisServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A Redis that just (re)started: the leases in it look expired, but their holders had
    no chance to renew them yet; claiming them would count the outage as worker crashes."""
    settings = Settings(
        model={"name": str(tiny_model_dir), "device": "cpu"},
        redis={"url": private_redis.url},
        qdrant={"path": str(tmp_path / "qdrant")},
        ingest={**FAST, "lease_ttl_s": 3.0},
    )
    svc = Cdeq(settings)  # Redis only: never opens the store
    try:
        job_id = enqueue("restart", documents(10), service=svc)
        assert isinstance(svc.jobs, RedisJobStore)
        # A lease that expired a second ago (before the restart, as it were).
        svc.jobs.begin_delivery(job_id, 0, "holder", lease_ttl_s=-1.0, max_deliveries=3)
        assert svc.jobs.redis_uptime_s() < 3
        assert reconcile(service=svc, force=True).expired_leases == 0
        claimed = wait_for(
            "claimed once Redis has been up a lease TTL",
            lambda: reconcile(service=svc, force=True).expired_leases,
            timeout=20,
        )
        assert claimed == 1
    finally:
        svc.close()


class FlakyJobs(RedisJobStore):
    """Real Redis job records whose first `record_batch` and first `end_delivery` raise as a
    Redis outage would (nothing written)."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client)
        self.fail_record, self.fail_end = 1, 1

    def record_batch(self, job_id: str, index: int, outcome: BatchOutcome) -> bool:
        if self.fail_record > 0:
            self.fail_record -= 1
            raise StoreUnavailable("simulated: Redis went away", retry_after_s=0.1)
        return super().record_batch(job_id, index, outcome)

    def end_delivery(
        self, job_id: str, index: int, token: str | None, *, keep_for_s: float = 0.0
    ) -> None:
        if self.fail_end > 0:
            self.fail_end -= 1
            raise StoreUnavailable("simulated: Redis went away", retry_after_s=0.1)
        super().end_delivery(job_id, index, token, keep_for_s=keep_for_s)


def test_redis_fault_while_recording_is_not_counted_as_a_crash(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    jobs = FlakyJobs(redis.Redis.from_url(REDIS_URL))
    svc = _service(tiny_model_dir, tmp_path / "qdrant", embedder, jobs=jobs)
    try:
        with _worker(svc):
            job_id = enqueue("flaky", documents(10), service=svc)
            status = wait_for("job done", finished(lambda: job_status(job_id, service=svc)))
        assert (status.state, status.succeeded) == ("done", 10), status
        assert (jobs.fail_record, jobs.fail_end) == (0, 0)  # both faults happened
        counters = _counters(svc)
        assert counters.get("redeliveries", 0) == 0, counters  # no crash counted
    finally:
        svc.close()


# ---- one model per version ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def other_embedder(tmp_path_factory: pytest.TempPathFactory) -> CdeEmbedder:
    """Another tiny model (other weights, same size): a worker that was not upgraded."""
    folder = make_checkpoint(tmp_path_factory.mktemp("other-model"), size="tiny", seed=2)
    return CdeEmbedder.from_pretrained(folder, device="cpu", dtype="float32")


def _queued_rebuild(svc: Cdeq, name: str, n: int) -> tuple[str, list[RebuildBatch]]:
    """`n` documents ingested here (version 1), then a rebuild queued for nobody: its steps,
    for the test to run as workers would."""
    assert ingest_documents(name, documents(n), service=svc).succeeded == n
    job_id = rebuild_context(name, service=svc)
    assert isinstance(svc.jobs, RedisJobStore)
    steps = []
    for index in range(job_status(job_id, service=svc).batches):
        loaded = svc.jobs.load_batch(job_id, index)
        assert loaded is not None
        steps.append(RebuildBatch(job_id, name, index, [str(p) for p in loaded[1]]))
    return job_id, steps


def test_a_rebuild_write_by_another_model_is_refused(
    tiny_model_dir: Path,
    embedder: CdeEmbedder,
    other_embedder: CdeEmbedder,
    tmp_path: Path,
    clean_redis: redis.Redis,
) -> None:
    """Two workers, two models: the one whose model is not the new version's writes nothing."""
    svc = _service(tiny_model_dir, tmp_path / "qdrant", embedder)
    other = Cdeq(svc.settings, embedder=other_embedder, store=svc.store, jobs=svc.jobs)
    try:
        _, steps = _queued_rebuild(svc, "mixed", 40)  # 2 batches and the finish
        run_rebuild_batch(svc, steps[0])  # builds version 2 with this model
        with pytest.raises(ModelMismatch, match="was embedded with model"):
            run_rebuild_batch(other, steps[1])
        assert svc.store.count_physical("mixed__c2") == 20  # the other model wrote nothing
        assert svc.store.count_other_model("mixed__c2", embedder.fingerprint) == 0
    finally:
        svc.close()


def test_the_finish_refuses_a_version_holding_another_models_vectors(
    tiny_model_dir: Path,
    embedder: CdeEmbedder,
    other_embedder: CdeEmbedder,
    tmp_path: Path,
    clean_redis: redis.Redis,
) -> None:
    svc = _service(tiny_model_dir, tmp_path / "qdrant", embedder)
    try:
        _, steps = _queued_rebuild(svc, "stamped", 40)
        for step in steps[:-1]:
            run_rebuild_batch(svc, step)
        # A worker without the write check (an older cdeq) overwrote one document.
        target = svc.contexts.at_version("stamped", 2)
        doc = svc.store.fetch_stored("stamped__c1", steps[1].point_ids[:1])[0]
        vector = other_embedder.embed_documents([doc.text or ""], target.dataset_embeddings)
        record = PointRecord(
            doc.document_id,
            vector.vectors[0],
            doc.text,
            doc.metadata,
            doc.content_hash,
            2,
            model_fingerprint=other_embedder.fingerprint,
        )
        svc.store.upsert("stamped__c2", [record])
        with pytest.raises(ModelMismatch, match="1 of its 40 documents were not written by"):
            run_rebuild_batch(svc, steps[-1])
        assert svc.store.resolve("stamped") == "stamped__c1"  # no swap
    finally:
        svc.close()


# ---- the reconciler -----------------------------------------------------------------------------
def test_lost_messages_are_requeued_while_other_jobs_wait_in_the_queue(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    """A busy queue (another job's batches waiting, no worker yet) does not hide a job whose
    messages were lost: it is queued again, the waiting one is left alone."""
    svc = _service(tiny_model_dir, tmp_path / "qdrant", embedder)
    try:
        lost = enqueue("lost", documents(10), service=svc)
        clean_redis.delete(INGEST_QUEUE)  # as a Redis restart without them would
        busy = enqueue("busy", documents(40), service=svc)
        assert clean_redis.llen(INGEST_QUEUE) == 2
        requeued = wait_for(
            "the lost job re-queued",
            lambda: reconcile(service=svc, force=True).requeued,
            timeout=20,
        )
        assert requeued == [(lost, 0)]
        assert busy not in {job for job, _ in reconcile(service=svc, force=True).requeued}
    finally:
        svc.close()


# ---- rollback ---------------------------------------------------------------------------------------
class LosingStore(QdrantStore):
    """Local Qdrant where writes of document `lost` into `physical` never land (a write lost
    on the way, so a catch-up cannot converge)."""

    physical = ""
    lost = ""

    def upsert(self, physical: str, points: Any) -> None:
        if physical == self.physical:
            points = [p for p in points if p.document_id != self.lost]
        super().upsert(physical, points)


def test_rollback_refuses_an_incomplete_version(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    settings = Settings(
        model={"name": str(tiny_model_dir), "device": "cpu"},
        qdrant={"path": str(tmp_path / "qdrant")},
        ingest={"batch_size": 20},
        context={"auto_rebuild": False},
    )
    store = LosingStore.from_settings(QdrantSettings(path=str(tmp_path / "qdrant")), dim=64)
    migrate(store)
    svc = Cdeq(settings, embedder=embedder, store=store)  # in-process: no Redis
    try:
        assert ingest_documents("rb", documents(40), service=svc).succeeded == 40
        rebuild_context("rb", service=svc)
        assert svc.store.resolve("rb") == "rb__c2"
        late = [{"id": "late", "text": "a document ingested after the swap"}]
        assert ingest_documents("rb", late, service=svc).succeeded == 1
        store.physical, store.lost = "rb__c1", "late"  # the catch-up of version 1 loses it
        with pytest.raises(ContextNotReady, match="holds 40 documents, the live one 41"):
            rollback("rb", service=svc)
        assert svc.store.resolve("rb") == "rb__c2"  # no swap to a version missing a document
    finally:
        svc.close()


# ---- one worker per local folder ----------------------------------------------------------------------
def test_a_second_worker_on_the_same_local_folder_exits_5_at_once(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The first worker holds the folder from its start (before its pool process opens it):
    a second one is refused at once, naming the folder."""
    settings = Settings(
        model={"name": str(tiny_model_dir), "device": "cpu"},
        redis={"url": REDIS_URL},
        qdrant={"path": str(tmp_path / "qdrant")},
    )
    first = hold_local_folder(settings)  # what `cdeq worker` takes before anything else
    assert first is not None
    try:
        env = Workers(tmp_path, tiny_model_dir).env(REDIS_URL)
        second = subprocess.run(
            [sys.executable, "-m", "app.cli", "worker", "--concurrency", "1"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        first.close()
    assert second.returncode == 5, second.stderr
    assert "is held by another cdeq worker" in second.stderr
    assert str(tmp_path / "qdrant") in second.stderr


def test_an_orphan_rebuild_marker_is_cleared_with_its_version(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    """A rebuild whose job record is gone (Redis emptied) leaves its marker and a half-made
    version: the reconciler removes both, logs and counts it; ingests then write only the
    live version."""
    svc = _service(tiny_model_dir, tmp_path / "qdrant", embedder)
    try:
        job_id, steps = _queued_rebuild(svc, "orphan", 40)
        run_rebuild_batch(svc, steps[0])  # version 2 exists, half written
        clean_redis.delete(*clean_redis.keys(f"cdeq:job:{job_id}*"))
        clean_redis.srem("cdeq:jobs:active", job_id)
        assert context_info("orphan", service=svc).rebuild is None  # not shown as running
        report = reconcile(service=svc, force=True)
        assert report.orphan_markers == ["orphan"]
        assert svc.store.load_rebuild_marker("orphan") is None
        assert svc.store.physical_collections("orphan") == ["orphan__c1"]
        assert svc.store.load_context("orphan", 2) is None
        assert _counters(svc).get("orphan_rebuilds") == 1
        assert reconcile(service=svc, force=True).orphan_markers == []  # once
    finally:
        svc.close()


def test_drop_collection_during_a_rebuild_is_refused_unless_forced(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    """Refused (Conflict: HTTP 409, exit 6) while the rebuild runs; --force cancels it: job
    failed with the reason, counted; its remaining steps do nothing."""
    svc = _service(tiny_model_dir, tmp_path / "qdrant", embedder)
    try:
        job_id, steps = _queued_rebuild(svc, "busy", 40)
        run_rebuild_batch(svc, steps[0])
        with pytest.raises(Conflict, match="drop with --force"):
            drop_collection("busy", service=svc)
        assert svc.store.resolve("busy") == "busy__c1"
        drop_collection("busy", service=svc, force=True)
        status = job_status(job_id, service=svc)
        assert status.state == "failed" and "the collection was dropped" in status.reason
        assert svc.store.physical_collections("busy") == []
        assert svc.store.load_rebuild_marker("busy") is None
        assert run_rebuild_batch(svc, steps[1]) is None  # a step still queued: nothing
        assert svc.store.physical_collections("busy") == []
        assert _counters(svc).get("failed_rebuilds") == 1
    finally:
        svc.close()


# ---- leases, re-queues, exactly-once records ------------------------------------------------------
class SlowStore(QdrantStore):
    """Local Qdrant whose upserts take `delay_s` first: a batch longer than the lease TTL."""

    delay_s = 0.0

    def upsert(self, physical: str, points: Any) -> None:
        time.sleep(self.delay_s)
        super().upsert(physical, points)


def test_a_batch_longer_than_the_lease_ttl_keeps_its_lease(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    store = SlowStore.from_settings(QdrantSettings(path=str(tmp_path / "qdrant")), dim=64)
    migrate(store)
    svc = _service(tiny_model_dir, tmp_path / "qdrant", embedder)
    svc.__dict__["store"] = store
    store.delay_s = 3.0  # three lease TTLs; the heartbeat renews every 0.3 s
    try:
        with _worker(svc):
            job_id = enqueue("slow", documents(10), service=svc)
            status = wait_for("job done", finished(lambda: job_status(job_id, service=svc)))
        assert (status.state, status.succeeded) == ("done", 10), status
        counters = _counters(svc)
        assert counters.get("expired_leases", 0) == 0, counters
        assert counters.get("reconciled_batches", 0) == 0, counters
    finally:
        svc.close()


def test_an_expired_lease_is_requeued(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    """A worker took batch 0 and died (its lease is never renewed); batch 1 still waits in
    the queue, so the job does not look idle: only the expired lease brings batch 0 back."""
    svc = _service(tiny_model_dir, tmp_path / "qdrant", embedder)
    try:
        job_id = enqueue("dead", documents(40), service=svc)  # batches 0 and 1 queued
        clean_redis.rpop(INGEST_QUEUE)  # the dead worker took batch 0's message (sent first)
        begin(svc, job_id, 0, "dead-worker")  # …and its lease, never renewed
        requeued = wait_for(
            "batch 0 re-queued",
            lambda: reconcile(service=svc, force=True).requeued,
            timeout=20,
        )
        assert requeued == [(job_id, 0)]
        assert _counters(svc).get("expired_leases") == 1
    finally:
        svc.close()


def test_the_same_batch_recorded_twice_at_once_counts_once(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    """Two deliveries of one batch (a re-queue while the first still runs) both finish and
    record at the same instant: the counts take it once."""
    svc = _service(tiny_model_dir, tmp_path / "qdrant", embedder)
    try:
        job_id = enqueue("twice", documents(40), service=svc)
        outcome = BatchOutcome(succeeded=20)
        barrier = threading.Barrier(8)

        def record() -> bool:
            barrier.wait()
            return svc.jobs.record_batch(job_id, 0, outcome)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: record(), range(8)))
        assert results.count(True) == 1
        status = job_status(job_id, service=svc)
        assert (status.succeeded, status.batches_done, status.state) == (20, 1, "running")
    finally:
        svc.close()


# ---- rebuild: dual write, swap count --------------------------------------------------------------
def test_an_ingest_during_a_rebuild_reaches_the_new_version(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    """Checked before the finish runs: its catch-up would re-embed the document anyway."""
    svc = _service(tiny_model_dir, tmp_path / "qdrant", embedder)
    try:
        _, steps = _queued_rebuild(svc, "dual", 40)
        run_rebuild_batch(svc, steps[0])  # version 2 exists
        late = [{"id": "late", "text": "a document ingested while the rebuild runs"}]
        assert ingest_documents("dual", late, service=svc).succeeded == 1
        found = svc.store.fetch_stored("dual__c2", [point_id("dual", "late")])
        assert [d.document_id for d in found] == ["late"]
        assert svc.store.resolve("dual") == "dual__c1"  # not finished: no catch-up ran
    finally:
        svc.close()


class StaleScanStore(QdrantStore):
    """Local Qdrant whose scan of `physical` is stale: it reports the points of `like` (the
    count stays exact), as a scan that missed a lost write would."""

    physical = ""
    like = ""

    def point_hashes(self, physical: str) -> dict[str, str]:
        return super().point_hashes(self.like if physical == self.physical else physical)


def test_the_finish_refuses_a_version_short_of_documents(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    store = StaleScanStore.from_settings(QdrantSettings(path=str(tmp_path / "qdrant")), dim=64)
    migrate(store)
    svc = _service(tiny_model_dir, tmp_path / "qdrant", embedder)
    svc.__dict__["store"] = store
    try:
        _, steps = _queued_rebuild(svc, "short", 40)
        for step in steps[:-1]:
            run_rebuild_batch(svc, step)
        store.delete_points("short__c2", steps[0].point_ids[:1])  # a write that was lost
        store.physical, store.like = "short__c2", "short__c1"  # the catch-up sees no gap
        with pytest.raises(ContextNotReady, match="holds 39 documents, the live one 40"):
            run_rebuild_batch(svc, steps[-1])
        assert svc.store.resolve("short") == "short__c1"  # no swap to a short version
    finally:
        svc.close()
