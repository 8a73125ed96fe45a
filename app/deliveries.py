"""Queued deliveries of a batch, ingest or rebuild alike: each run holds a lease in Redis
(renewed by the worker's keeper thread) and is counted, so the reconciler (`app.reconcile`)
finds a batch whose worker died, and a batch that kills its worker again and again is failed
after `CDEQ_INGEST__MAX_DELIVERIES` runs instead of looping. What "failed" means is the
caller's: an ingest batch's documents fail, a rebuild is given up (`app.rebuild_batches`)."""

from __future__ import annotations

import logging

from app.errors import StoreUnavailable
from app.jobs import RedisJobStore, Start
from app.service import Cdeq

log = logging.getLogger(__name__)


def leased_jobs(svc: Cdeq) -> RedisJobStore:
    """The Redis job store (leases exist only with a queue)."""
    jobs = svc.jobs
    if not isinstance(jobs, RedisJobStore):
        raise StoreUnavailable("batch leases need Redis: set CDEQ_REDIS__URL", retry_after_s=0)
    return jobs


def count(svc: Cdeq, **increments: int) -> None:
    """Add to the recovery counters (`cdeq:metrics`) when there are any (queued mode); a
    counter Redis cannot take is logged, never raised: a metric must not stop recovery."""
    if not isinstance(svc.jobs, RedisJobStore):
        return
    try:
        svc.jobs.count(**increments)
    except StoreUnavailable as exc:
        log.warning("could not count %s: %s", ", ".join(increments), exc)


def crashed_reason(crashes: int) -> str:
    return (
        f"worker crashed {crashes} times on this batch (killed, out of memory, or lost Redis "
        "before recording it)"
    )


def begin(svc: Cdeq, job_id: str, index: int, token: str) -> tuple[Start, int]:
    """Lease batch `index` of `job_id` for the run `token` and count the delivery:
    (what to do, how many times a worker died on it so far)."""
    settings = svc.settings.ingest
    return leased_jobs(svc).begin_delivery(
        job_id,
        index,
        token,
        lease_ttl_s=settings.lease_ttl_s,
        max_deliveries=settings.max_deliveries,
    )


def end(
    svc: Cdeq, job_id: str, index: int, token: str | None, *, retry_in_s: float | None = None
) -> None:
    """This run of the batch ended cleanly (recorded, or a retry scheduled in `retry_in_s`:
    the lease then stays until the retry is due, plus one lease TTL). `token=None` ends
    whichever run holds it (the worker's parent process after a hard time limit)."""
    keep = 0.0 if retry_in_s is None else retry_in_s + svc.settings.ingest.lease_ttl_s
    leased_jobs(svc).end_delivery(job_id, index, token, keep_for_s=keep)
