"""Running a context rebuild's batches: re-embed one batch into the new version, the finish
step, the failure policy, and queued deliveries.

A rebuild job of n batches of point ids has n + 1 steps: the batches, then the finish
(`app.rebuild.finish_rebuild`: catch-up, counted swap), a batch of its own (index n, no point
ids) that the batch completing the set queues. Queued, every step goes through the same
machinery as an ingest batch: a lease renewed by the worker's keeper, a delivery count capped
by `CDEQ_INGEST__MAX_DELIVERIES` (`app.deliveries`), and the reconciler (`app.reconcile`),
which queues again the steps of a dead worker, of lost messages, or never queued.

A rebuild is all or nothing: the new version goes live only when it holds every document. A
step that cannot succeed (a batch that crashed its worker too often, ran past the hard time
limit, or failed for good) gives the whole rebuild up: job `failed` with the reason, the new
version deleted, the marker cleared; the live version was never written by the rebuild."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from app.contexts import Context
from app.deliveries import begin, count, crashed_reason, leased_jobs
from app.errors import (
    TRANSIENT_ERRORS,
    CdeqError,
    Conflict,
    ContextNotReady,
    ModelMismatch,
    NotFound,
    StoreUnavailable,
)
from app.jobs import BatchOutcome, JobState, JobStatus, RedisJobStore, Start
from app.model import Progress
from app.rebuild import abandon, finish_rebuild, write_stored
from app.service import Cdeq
from app.sparse import carries_over
from app.store import ContextSource, RebuildMarker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RebuildBatch:
    """One step of a rebuild job: point ids of the source version to re-embed (none for the
    finish step, the job's last index)."""

    job_id: str
    collection: str
    index: int
    point_ids: list[str] = field(default_factory=list)


def run_rebuild_batch(svc: Cdeq, batch: RebuildBatch) -> BatchOutcome | None:
    """Re-embed one batch into the target version and count it; the finish step (the job's
    last index) finishes the job once every batch is counted. None when there was nothing to
    re-embed. Safe to repeat: a counted batch is not embedded again."""
    jobs = svc.jobs
    status = jobs.status(batch.job_id)
    if status.finished:
        return None
    if batch.index == status.batches - 1:  # the finish step
        if status.batches_done >= status.batches - 1:
            finish_rebuild(svc, batch.collection, batch.job_id)
        return None
    if jobs.batch_done(batch.job_id, batch.index):
        return None
    jobs.mark_running(batch.job_id)
    marker = _marker_of(svc, batch.collection, batch.job_id)
    target = _ensure_target(svc, marker, status)
    source = svc.store.physical_name(batch.collection, marker.from_version)
    # Deleted meanwhile: left out. With the BM25 vectors when the target may copy them.
    docs = svc.store.fetch_stored(
        source, batch.point_ids, sparse=carries_over(svc, source, target.physical)
    )
    truncated = sum(write_stored(svc, batch.collection, docs, target))
    outcome = BatchOutcome(succeeded=len(docs), truncated=truncated)
    jobs.record_batch(batch.job_id, batch.index, outcome)
    return outcome


def finish_due(svc: Cdeq, job_id: str) -> int | None:
    """The index of the finish step when every batch of the job is counted, else None."""
    status = svc.jobs.status(job_id)
    if status.finished or status.batches_done < status.batches - 1:
        return None
    return status.batches - 1


def queue_finish(svc: Cdeq, job_id: str) -> None:
    """Queue the finish step if this job is ready for it (queued mode). If Redis fails here,
    the reconciler queues it once the job has been idle for a lease TTL."""
    index = finish_due(svc, job_id)
    if index is None:
        return
    try:
        svc.dispatcher.send_rebuild_batch(job_id, index, _request_of(svc, job_id))
    except StoreUnavailable as exc:
        log.warning("rebuild %s: could not queue its finish (%s); the reconciler will", job_id, exc)


def rebuild_failed(
    svc: Cdeq, batch: RebuildBatch, exc: BaseException, *, retries: int
) -> float | None:
    """The failure policy of a rebuild step: transient errors give a countdown (until
    `max_retries`); anything else gives the whole rebuild up, leaving the live version as it
    was. None when not retried."""
    settings = svc.settings.ingest
    if isinstance(exc, TRANSIENT_ERRORS) and retries < settings.max_retries:
        return float(min(settings.retry_backoff_max_s, max(exc.retry_after_s, 2.0**retries)))
    if isinstance(exc, TRANSIENT_ERRORS):
        reason = f"failed after {retries} retries (CDEQ_INGEST__MAX_RETRIES): {exc}"
        count(svc, retries_exhausted=1)
    elif isinstance(exc, CdeqError):
        reason = str(exc)
        if isinstance(exc, ModelMismatch):  # refused to write another model's vectors
            count(svc, model_mismatches=1)
    else:
        log.error("rebuild %s batch %d: internal error", batch.job_id, batch.index, exc_info=exc)
        reason = f"internal error: {type(exc).__name__}: {exc}"
    give_up(svc, batch.collection, batch.job_id, f"rebuild failed: {reason}")
    return None


def give_up(svc: Cdeq, collection: str, job_id: str, reason: str) -> None:
    """Fail the rebuild job with `reason` (counted once, in `failed_rebuilds`) and remove its
    unfinished version; the live version stays as it was."""
    _mark_failed(svc, job_id, reason)
    clean_up(svc, collection, job_id)


def _mark_failed(svc: Cdeq, job_id: str, reason: str) -> None:
    if not svc.jobs.fail(job_id, reason):
        return  # finished already (done, or given up by another step)
    log.error("rebuild job %s: %s", job_id, reason)
    if isinstance(svc.jobs, RedisJobStore):
        try:
            svc.jobs.count(failed_rebuilds=1)
        except StoreUnavailable as exc:  # a metric must not stop the clean-up
            log.warning("could not count a failed rebuild: %s", exc)


def clean_up(svc: Cdeq, collection: str, job_id: str) -> None:
    """If `job_id` failed and is still the rebuild of `collection`, delete its new version and
    clear the marker (under the collection's lock: never in the middle of a finish)."""
    try:
        if svc.jobs.status(job_id).state != JobState.FAILED:
            return
        with svc.locks(collection):
            marker = svc.store.load_rebuild_marker(collection)
            if marker is not None and marker.job_id == job_id:
                abandon(svc, marker)
                log.warning(
                    "rebuild %s of %r given up: its new version is removed", job_id, collection
                )
    except CdeqError as exc:  # the next delivery, or the next rebuild, cleans up what is left
        log.warning("could not clean up the failed rebuild of %r: %s", collection, exc)


def _marker_of(svc: Cdeq, collection: str, job_id: str) -> RebuildMarker:
    marker = svc.store.load_rebuild_marker(collection)
    if marker is None or marker.job_id != job_id:
        raise Conflict(f"job {job_id} is no longer the rebuild of {collection!r}")
    return marker


def _ensure_target(svc: Cdeq, marker: RebuildMarker, status: JobStatus) -> Context:
    """The target context, built (stage 1 once, under the lock) by the first batch to need it."""
    contexts = svc.contexts
    try:
        return contexts.at_version(marker.collection, marker.target_version)
    except ContextNotReady:
        pass
    with svc.locks(marker.collection):
        try:
            return contexts.at_version(marker.collection, marker.target_version)
        except ContextNotReady:
            corpus = svc.jobs.context_sample(marker.job_id)
            if not corpus:
                raise Conflict(f"rebuild job {marker.job_id} lost its context sample") from None
            source = ContextSource(marker.source)
            return contexts.build_version(
                marker.collection,
                marker.target_version,
                corpus,
                source=source,
                trigger=marker.trigger,
                points_at_build=status.total if source == ContextSource.REBUILD else 0,
                seed=marker.seed,
            )


def dispatch(svc: Cdeq, steps: list[RebuildBatch], request_id: str | None = None) -> None:
    """Queue a new rebuild's batches (the finish step is queued by the batch completing the
    set). If Redis fails meanwhile, the job exists and the reconciler queues the rest."""
    job_id = steps[0].job_id
    try:
        for step in steps[:-1]:
            svc.dispatcher.send_rebuild_batch(step.job_id, step.index, request_id)
        svc.jobs.mark_dispatched(job_id)
    except StoreUnavailable as exc:
        log.warning(
            "rebuild %s is recorded but not all its batches were queued (%s); a worker's "
            "reconciler queues the rest once Redis answers",
            job_id,
            exc,
        )


def run_here(
    svc: Cdeq, steps: list[RebuildBatch], total: int, on_progress: Progress | None
) -> None:
    """In-process mode: every step here, in order, with the workers' failure policy."""
    done = 0
    for step in steps:
        retries = 0
        while True:
            try:
                run_rebuild_batch(svc, step)
                break
            except Exception as exc:  # the rebuild's failure policy decides
                countdown = rebuild_failed(svc, step, exc, retries=retries)
                if countdown is None:
                    return
                time.sleep(countdown)
                retries += 1
        done += len(step.point_ids)
        if on_progress is not None:
            on_progress(done, total)


# ---- queued deliveries: leases, crash cap, time limits ------------------------------------------
def start_rebuild_delivery(svc: Cdeq, job_id: str, index: int, token: str) -> RebuildBatch | None:
    """Lease a queued rebuild step for this run and load its point ids. None when there is
    nothing to run: it is counted already, its job is gone or finished (a failed job's new
    version is removed here, if nobody did yet), or workers died on it `max_deliveries`
    times (the rebuild is then given up)."""
    decision, crashes = begin(svc, job_id, index, token)
    if decision == Start.MISSING:
        log.warning("rebuild %s step %d: the job does not exist (expired?); dropped", job_id, index)
        return None
    jobs = leased_jobs(svc)
    if decision == Start.SKIP:
        status = jobs.status(job_id)
        if status.state == JobState.FAILED:
            clean_up(svc, status.collection, job_id)
        return None
    loaded = jobs.load_batch(job_id, index)
    if loaded is None:
        return None
    batch = RebuildBatch(job_id, loaded[0], index, [str(p) for p in loaded[1]])
    if decision == Start.CRASHED_OUT:
        give_up(
            svc,
            batch.collection,
            job_id,
            f"rebuild failed: batch {index}{_documents_of(svc, batch)}: {crashed_reason(crashes)}",
        )
        jobs.end_delivery(job_id, index, None)
        return None
    if crashes:
        log.warning("rebuild %s step %d: delivery after %d crash(es)", job_id, index, crashes)
    return batch


def fail_rebuild_timed_out(svc: Cdeq, job_id: str, index: int, reason: str) -> None:
    """A rebuild step killed for the hard time limit (seen by the worker's parent process,
    which never opens the store): fail the job, end the delivery, and queue the step once more
    so that a pool process removes the new version."""
    jobs = leased_jobs(svc)
    _mark_failed(svc, job_id, f"rebuild failed: batch {index}: {reason}")
    jobs.end_delivery(job_id, index, None)
    svc.dispatcher.send_rebuild_batch(job_id, index, _request_of(svc, job_id))


def _request_of(svc: Cdeq, job_id: str) -> str | None:
    """The request id of the job's API request (for the worker's log lines), if known."""
    try:
        return svc.jobs.status(job_id).request_id
    except NotFound:
        return None


def _documents_of(svc: Cdeq, batch: RebuildBatch) -> str:
    """' (documents [...], k in all)' naming the batch's documents, for the reason; '' when
    the store cannot tell."""
    try:
        marker = _marker_of(svc, batch.collection, batch.job_id)
        source = svc.store.physical_name(batch.collection, marker.from_version)
        ids = sorted(d.document_id for d in svc.store.fetch_stored(source, batch.point_ids))
    except CdeqError:
        return ""
    shown = ", ".join(repr(i) for i in ids[:5]) + (", …" if len(ids) > 5 else "")
    return f" (documents [{shown}], {len(ids)} in all)"
