"""Ingest use cases: submit a job, run one batch of it, read a job's status.

`submit` decides once whether a job goes to the queue (Redis + Celery workers) or runs in this
process (in-process mode). Both record the job the same way (in Redis, or in this process's
memory) and run every batch through `process_batch` with the same failure policy
(`batch_failed`), so a document is stored, or fails with the same reason, in either mode.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from app.documents import Document, validate_documents
from app.errors import CdeqError, ContextNotReady, StoreUnavailable
from app.jobs import BatchOutcome, Corpus, JobStatus, context_sample, split
from app.model import Progress
from app.service import Cdeq
from app.store import PointRecord

log = logging.getLogger(__name__)

# Errors that pass: the batch is tried again later instead of failing its documents.
TRANSIENT_ERRORS = (StoreUnavailable, ContextNotReady)


@dataclass(frozen=True)
class Batch:
    """One batch of a job, as it travels through the queue."""

    job_id: str
    collection: str
    index: int
    documents: list[dict[str, Any]]  # Document.to_dict() of each

    def as_args(self) -> list[Any]:
        return [self.job_id, self.collection, self.index, self.documents]

    @property
    def document_ids(self) -> list[str]:
        return [str(d["id"]) for d in self.documents]


def truncation_warning(max_tokens: int) -> str:
    return f"truncated: only the first {max_tokens} tokens were embedded"


# ---- submitting a job ----------------------------------------------------------------------
def _validate(svc: Cdeq, collection: str, documents: object) -> list[Document]:
    settings = svc.settings.ingest
    return validate_documents(
        collection,
        documents,
        max_documents=settings.max_documents_per_job,
        max_text_chars=settings.max_text_chars,
    )


def _record(
    svc: Cdeq, collection: str, docs: list[Document], request_id: str | None = None
) -> tuple[str, list[Batch]]:
    """Record a new job and cut it into batches."""
    settings = svc.settings.ingest
    job_id = uuid.uuid4().hex
    batches = [
        Batch(job_id, collection, index, [d.to_dict() for d in chunk])
        for index, chunk in enumerate(split(docs, settings.batch_size))
    ]
    sample = context_sample(docs, settings.context_sample_size, settings.context_seed)
    svc.jobs.create(job_id, collection, len(docs), len(batches), sample, request_id=request_id)
    return job_id, batches


def submit(
    collection: str,
    documents: Sequence[Any],
    *,
    service: Cdeq,
    on_progress: Progress | None = None,
    request_id: str | None = None,
) -> str:
    """Validate every document, record the job and run it; returns the job id.

    With a queue (Redis) the batches are queued for workers and this returns at once; in
    in-process mode they run here, and the job is finished when this returns. Either way
    `job_status(job_id)` reads the outcome. On any invalid document nothing is recorded and
    `InvalidInput` lists every problem. `request_id` (the API request's) is kept in the job
    record."""
    if service.queued:
        return enqueue(collection, documents, service=service, request_id=request_id)
    docs = _validate(service, collection, documents)
    service.embedder  # noqa: B018 (a model that cannot load fails the call, not each batch)
    job_id, batches = _record(service, collection, docs, request_id)
    _run_here(service, batches, len(docs), on_progress)
    return job_id


def enqueue(
    collection: str, documents: Sequence[Any], *, service: Cdeq, request_id: str | None = None
) -> str:
    """Validate, record and queue a job for the workers (needs Redis); returns the job id."""
    docs = _validate(service, collection, documents)
    dispatcher = service.dispatcher  # fails clearly before anything is recorded without Redis
    job_id, batches = _record(service, collection, docs, request_id)
    try:
        for batch in batches:
            dispatcher.send_batch(*batch.as_args())
    except StoreUnavailable as exc:
        service.jobs.fail(job_id, f"could not queue all batches: {exc}")
        raise
    return job_id


def ingest_documents(
    collection: str,
    documents: Sequence[Any],
    *,
    service: Cdeq,
    on_progress: Progress | None = None,
) -> JobStatus:
    """The whole job in this process (no queue, even when Redis is configured); its outcome."""
    docs = _validate(service, collection, documents)
    service.embedder  # noqa: B018 (a model that cannot load fails the call, not each batch)
    job_id, batches = _record(service, collection, docs)
    _run_here(service, batches, len(docs), on_progress)
    return service.jobs.status(job_id)


def job_status(job_id: str, *, service: Cdeq) -> JobStatus:
    """State, counts and per-document reasons of a job (queued or in-process)."""
    return service.jobs.status(job_id)


def _run_here(svc: Cdeq, batches: list[Batch], total: int, on_progress: Progress | None) -> None:
    """Run batches in this process with the workers' failure policy, waiting out retries."""
    done = 0
    for batch in batches:
        retries = 0
        while True:
            try:
                process_batch(svc, batch)
                break
            except Exception as exc:  # every failure is recorded or retried by the policy
                countdown = batch_failed(svc, batch, exc, retries=retries)
                if countdown is None:
                    break
                log.warning(
                    "job %s batch %d: %s; retry in %.0fs", batch.job_id, batch.index, exc, countdown
                )
                time.sleep(countdown)
                retries += 1
        done += len(batch.documents)
        if on_progress is not None:
            on_progress(done, total)


# ---- one batch -----------------------------------------------------------------------------
def store_documents(
    svc: Cdeq, collection: str, documents: Sequence[Document], corpus: Callable[[], Corpus]
) -> BatchOutcome:
    """Context (built on first use) → stage 2 → upsert. Deterministic point ids make a
    repeated call overwrite instead of duplicating."""
    context = svc.contexts.ensure(collection, corpus)
    embedder = svc.embedder
    embeddings = embedder.embed_documents([d.text for d in documents], context.dataset_embeddings)
    svc.store.upsert(
        context.physical,
        [
            PointRecord(
                document_id=d.id,
                vector=vector,
                text=d.text,
                metadata=d.metadata,
                content_hash=d.content_hash,
                context_version=context.version,
            )
            for d, vector in zip(documents, embeddings.vectors, strict=True)
        ],
    )
    warning = truncation_warning(embedder.max_seq_length)
    truncated = {
        d.id: warning for d, cut in zip(documents, embeddings.truncated, strict=True) if cut
    }
    return BatchOutcome(succeeded=len(documents), truncated=len(truncated), warnings=truncated)


def process_batch(svc: Cdeq, batch: Batch) -> BatchOutcome | None:
    """Store one batch and count it. Returns None when the batch was already counted
    (re-delivery after the record was written): the points exist, nothing is done twice."""
    jobs = svc.jobs
    if jobs.batch_done(batch.job_id, batch.index):
        return None
    jobs.mark_running(batch.job_id)
    docs = [
        Document(id=d["id"], text=d["text"], metadata=d.get("metadata") or {})
        for d in batch.documents
    ]
    outcome = store_documents(
        svc, batch.collection, docs, lambda: jobs.context_sample(batch.job_id)
    )
    jobs.record_batch(batch.job_id, batch.index, outcome)
    return outcome


def fail_batch(svc: Cdeq, batch: Batch, reason: str) -> None:
    """Count a batch that will not be retried as failed, so its job still finishes."""
    svc.jobs.record_batch(
        batch.job_id, batch.index, BatchOutcome.all_failed(batch.document_ids, reason)
    )


def retry_countdown(retries: int, retry_after_s: float, cap_s: int) -> float:
    """max(the store's retry-after, 2^retries) seconds, capped."""
    return float(min(cap_s, max(retry_after_s, 2.0**retries)))


def batch_failed(svc: Cdeq, batch: Batch, exc: BaseException, *, retries: int) -> float | None:
    """The one failure policy of a batch, for workers and in-process runs alike.

    Transient errors (store unreachable, context being built elsewhere) give the countdown
    before the next try, until `max_retries`. Anything else, or retries exhausted, records
    the batch's documents as failed with the reason and gives None."""
    settings = svc.settings.ingest
    if isinstance(exc, TRANSIENT_ERRORS):
        if retries < settings.max_retries:
            return retry_countdown(retries, exc.retry_after_s, settings.retry_backoff_max_s)
        reason = f"failed after {retries} retries: {exc}"
    elif isinstance(exc, CdeqError):
        reason = str(exc)
    else:  # a bug, not a fault of the input: keep the traceback in the log
        log.error("job %s batch %d: internal error", batch.job_id, batch.index, exc_info=exc)
        reason = f"internal error: {type(exc).__name__}: {exc}"
    log.error("job %s batch %d failed: %s", batch.job_id, batch.index, reason)
    fail_batch(svc, batch, reason)
    return None
