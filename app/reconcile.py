"""Recovery of queued jobs: re-queue batches whose worker died, queue batches that were never
sent, and fail what cannot finish, so that every job ends.

Any worker runs `reconcile` every `reconcile_interval_s` (and `cdeq reconcile` runs it once, for
operators). Ingest jobs and context-rebuild jobs alike (a rebuild's steps are queued again as
rebuild steps; one past its deadline gives the rebuild up, `app.rebuild_batches`). It relies on the job store's leases: a batch in flight has a lease its worker
renews every `heartbeat_s`; a lease not renewed for `lease_ttl_s` means the worker is gone.
Re-running a batch is harmless: upserts are idempotent and each batch is counted once.

What one pass does:
1. expired leases → the batch is queued again (`reconciled_batches`, `expired_leases`);
2. a job whose batches were not all queued (Redis failed during `enqueue`) → its remaining
   batches are queued, once `lease_ttl_s` has passed since it was recorded;
3. a job with nothing leased, no message of its own waiting in the queue (or held by a
   worker) and no activity for `lease_ttl_s` (its messages were lost, e.g. Redis restarted
   without them) → its remaining batches are queued again; if it still has no activity after
   `job_deadline_s`, they fail with a reason. Decided per job: other jobs' messages waiting
   in a busy queue never hold it back;
4. a rebuild marker whose job is gone or finished → its unfinished version removed, the
   marker cleared, logged and counted (`orphan_rebuilds`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from app.errors import CdeqError, NotFound
from app.ingest import Batch, fail_batch, leased_jobs
from app.jobs import JobKind, JobProgress, JobState
from app.queue import queued_jobs
from app.rebuild import abandon
from app.rebuild_batches import clean_up, give_up
from app.service import Cdeq
from app.store import RebuildMarker

log = logging.getLogger(__name__)
GIVEN_UP = "failed"  # `_orphan`: the job failed; its rebuild's clean-up applies


@dataclass
class ReconcileReport:
    """What one pass did."""

    expired_leases: int = 0
    requeued: list[tuple[str, int]] = field(default_factory=list)  # (job id, batch index)
    failed_jobs: list[str] = field(default_factory=list)
    orphan_markers: list[str] = field(default_factory=list)  # collections whose marker went
    skipped: bool = False  # another reconciler ran moments ago

    def to_dict(self) -> dict[str, object]:
        return {
            "expired_leases": self.expired_leases,
            "requeued_batches": len(self.requeued),
            "failed_jobs": self.failed_jobs,
            "orphan_markers": self.orphan_markers,
            "skipped": self.skipped,
        }


def _requeue(
    svc: Cdeq, job_id: str, kind: JobKind | None, indices: list[int], report: ReconcileReport
) -> None:
    try:  # the job's request, for the worker's log lines
        rid = svc.jobs.status(job_id).request_id
    except NotFound:  # expired: the worker finds nothing to do either
        rid = None
    for index in indices:
        if kind == JobKind.REBUILD:
            svc.dispatcher.send_rebuild_batch(job_id, index, request_id=rid)
        else:
            svc.dispatcher.send_batch(job_id, index, request_id=rid)
        report.requeued.append((job_id, index))


def _to_requeue(job: JobProgress) -> list[int]:
    """The steps to queue again: a rebuild's finish step (its last) only once nothing else
    remains (the batch that completes the set queues it)."""
    remaining = job.remaining
    if job.kind == JobKind.REBUILD and len(remaining) > 1:
        return [i for i in remaining if i != job.batches - 1]
    return remaining


def _deadline_reason(deadline_s: float) -> str:
    return (
        f"no worker made progress on this batch for {deadline_s:.0f}s (nothing leased, nothing "
        "queued; CDEQ_INGEST__JOB_DEADLINE_S)"
    )


def _fail_remaining(svc: Cdeq, job: JobProgress, reason: str) -> None:
    if job.kind == JobKind.REBUILD:  # all or nothing: the live version stays
        give_up(svc, job.collection, job.job_id, f"rebuild failed: {reason}")
        return
    jobs = leased_jobs(svc)
    for index in job.remaining:
        try:
            loaded = jobs.load_batch(job.job_id, index)
        except NotFound:
            return
        if loaded is None:
            return
        fail_batch(svc, Batch(job.job_id, loaded[0], index, loaded[1]), reason)


def reconcile(*, service: Cdeq, force: bool = False) -> ReconcileReport:
    """One recovery pass (see the module docstring). Without `force`, at most one pass runs per
    `reconcile_interval_s` across all workers."""
    settings = service.settings.ingest
    jobs = leased_jobs(service)
    report = ReconcileReport()
    if not force and not jobs.try_reconcile_lock(settings.reconcile_interval_s * 0.9):
        report.skipped = True
        return report

    # 1. leases whose holder stopped heartbeating; not within a lease TTL of a Redis restart,
    # when the holders have had no chance to renew yet (an outage is not a worker crash)
    restarted = jobs.redis_uptime_s() < settings.lease_ttl_s
    expired = [] if restarted else jobs.claim_expired_leases()
    report.expired_leases = len(expired)
    for job_id, index in expired:
        if not jobs.batch_done(job_id, index):
            log.warning(
                "job %s batch %d: its worker stopped (lease expired); re-queued", job_id, index
            )
            _requeue(service, job_id, jobs.kind_of(job_id), [index], report)

    # 2 and 3. unfinished jobs with nothing in flight
    now = time.time()
    leased = jobs.leased_jobs()
    waiting: set[str] | None = None  # jobs with a message in the queue, read once if needed
    just_requeued = {job_id for job_id, _ in report.requeued}
    for job_id in jobs.active_jobs():
        job = jobs.progress(job_id)
        if job is None or job_id in leased or job_id in just_requeued:
            continue
        if not job.dispatched:
            if now - job.created_at >= settings.lease_ttl_s:
                log.warning("job %s: batches never queued (enqueue failed); queuing them", job_id)
                _requeue(service, job_id, job.kind, _to_requeue(job), report)
                jobs.mark_dispatched(job_id, redispatched=True)
            continue
        last_activity = max(job.activity_at, job.created_at)
        if now - max(last_activity, job.redispatched_at) < settings.lease_ttl_s:
            continue
        if waiting is None:
            waiting = queued_jobs(service.redis) if service.redis is not None else set()
        if job_id in waiting:  # its own batches wait in the queue (busy, not lost)
            continue
        if now - last_activity >= settings.job_deadline_s:
            reason = _deadline_reason(settings.job_deadline_s)
            log.error(
                "job %s: %s; failing its %d remaining batches", job_id, reason, len(job.remaining)
            )
            _fail_remaining(service, job, reason)
            report.failed_jobs.append(job_id)
            continue
        log.warning("job %s: nothing leased or queued; re-queuing its remaining batches", job_id)
        _requeue(service, job_id, job.kind, _to_requeue(job), report)
        jobs.mark_dispatched(job_id, redispatched=True)

    _clear_orphan_markers(service, report)
    jobs.count(reconciled_batches=len(report.requeued), orphan_rebuilds=len(report.orphan_markers))
    return report


def _orphan(svc: Cdeq, marker: RebuildMarker) -> str | None:
    """Why `marker` belongs to no running rebuild (None while its job runs)."""
    try:
        status = svc.jobs.status(marker.job_id)
    except NotFound:
        return f"its job {marker.job_id} is gone (Redis emptied, or the record expired)"
    if not status.finished:
        return None
    if status.state == JobState.FAILED:
        return GIVEN_UP
    return f"its job {marker.job_id} ended ({status.state}) without clearing it"


def _clear_orphan_markers(svc: Cdeq, report: ReconcileReport) -> None:
    """4. a rebuild marker whose job is gone or finished (its worker or Redis lost it): its
    unfinished version is removed and the marker cleared, under the collection's lock, so
    ingests stop writing that version and `context show` stops showing a rebuild. Local
    storage is only looked at by the process that has it open (a worker)."""
    if not svc.settings.qdrant.url and not svc.has("store"):
        return
    try:
        marked = svc.store.rebuild_markers()
    except CdeqError as exc:  # the store is not ours to open here, or down: next pass
        log.warning("reconciler: could not list rebuild markers: %s", exc)
        return
    for collection in marked:
        try:
            marker = svc.store.load_rebuild_marker(collection)
            found = _orphan(svc, marker) if marker is not None else None
            if marker is None or found is None:
                continue
            if found == GIVEN_UP:  # a failed rebuild's own clean-up (logged as given up)
                clean_up(svc, collection, marker.job_id)
                continue
            with svc.locks(collection):
                marker = svc.store.load_rebuild_marker(collection)
                reason = _orphan(svc, marker) if marker is not None else None
                if marker is None or reason is None or reason == GIVEN_UP:
                    continue
                abandon(svc, marker)
        except CdeqError as exc:
            log.warning("reconciler: rebuild marker of %r left for now: %s", collection, exc)
            continue
        log.warning(
            "rebuild marker of %r cleared: %s; its version %d removed unless live",
            collection,
            reason,
            marker.target_version,
        )
        report.orphan_markers.append(collection)
