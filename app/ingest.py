"""Ingest use cases: submit a job, run one batch of it, read a job's status.

`submit` decides once whether a job goes to the queue (Redis + Celery workers) or runs in this
process (in-process mode). Both record the job the same way (in Redis, or in this process's
memory) and run every batch through `process_batch` with the same failure policy
(`batch_failed`), so a document is stored, or fails with the same reason, in either mode.

Queued batches also go through `start_delivery` / `end_delivery`: each run holds a lease in
Redis and is counted, so a batch whose worker died is found by the reconciler
(`app.reconcile`) and a batch that kills its worker again and again fails instead of looping.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from app.deliveries import begin, count, crashed_reason, end, leased_jobs
from app.documents import Document, validate_documents
from app.errors import (
    TRANSIENT_ERRORS,
    CdeqError,
    InvalidInput,
    ModelMismatch,
    NotFound,
    StoreUnavailable,
)
from app.jobs import BatchOutcome, Corpus, JobStatus, Start, context_sample, split
from app.lifecycle import after_ingest_job
from app.model import Progress
from app.rebuild import mirror_documents, write_stored
from app.service import Cdeq
from app.store import StoredDocument

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    """One batch of a job, as it travels through the queue."""

    job_id: str
    collection: str
    index: int
    documents: list[dict[str, Any]]  # Document.to_dict() of each

    @property
    def document_ids(self) -> list[str]:
        return [str(d["id"]) for d in self.documents]


def truncation_warning(max_tokens: int) -> str:
    return f"truncated: only the first {max_tokens} tokens were embedded"


def chunk_cap_warning(chunks: int, end: int, length: int) -> str:
    return (
        f"truncated: only the first {chunks} chunks (characters 0 to {end} of {length}) were "
        "embedded (CDEQ_INGEST__MAX_CHUNKS_PER_DOCUMENT)"
    )


def chunk_documents(
    svc: Cdeq, documents: Sequence[Document]
) -> tuple[list[StoredDocument], dict[str, str]]:
    """Each document as its chunks (CDEQ_INGEST__CHUNKING, read now: the service's settings
    decide, per call), and a warning for each document the chunk cap cut short.

    'off', or a text that fits the window: one chunk, the whole text (today's point)."""
    settings = svc.settings.ingest
    chunks: list[StoredDocument] = []
    warnings: dict[str, str] = {}
    embedder = svc.embedder if settings.chunking == "auto" else None
    for d in documents:
        if embedder is None:
            chunks.append(StoredDocument("", d.id, d.text, d.metadata, d.content_hash))
            continue
        try:
            plan = embedder.chunk(
                d.text,
                budget=settings.chunk_tokens,
                overlap=settings.chunk_overlap_tokens,
                max_chunks=settings.max_chunks_per_document,
            )
        except InvalidInput as exc:
            raise InvalidInput(
                f"CDEQ_INGEST__CHUNK_TOKENS / CHUNK_OVERLAP_TOKENS do not fit this model: {exc}",
                field="settings",
            ) from None
        count = len(plan.spans)
        chunks.extend(
            StoredDocument(
                "",
                d.id,
                d.text[span.start : span.end],
                d.metadata,
                d.content_hash,
                chunk_index=index,
                chunk_count=count,
                char_start=span.start,
                char_end=span.end,
            )
            for index, span in enumerate(plan.spans)
        )
        if plan.capped:
            warnings[d.id] = chunk_cap_warning(count, plan.spans[-1].end, len(d.text))
    return chunks, warnings


# ---- submitting a job ----------------------------------------------------------------------
def _validate(svc: Cdeq, collection: str, documents: object) -> list[Document]:
    settings = svc.settings.ingest
    return validate_documents(
        collection,
        documents,
        max_documents=settings.max_documents_per_job,
        max_text_chars=settings.max_text_chars,
        max_metadata_bytes=settings.max_metadata_bytes,
    )


def _record(
    svc: Cdeq,
    collection: str,
    docs: list[Document],
    *,
    job_id: str = "",
    queued: bool = False,
    request_id: str | None = None,
) -> tuple[str, list[Batch]]:
    """Record a new job and cut it into batches; `queued` stores the batches' documents with
    the job record, in the same transaction. `request_id` (the API request's) is kept too."""
    settings = svc.settings.ingest
    job_id = job_id or uuid.uuid4().hex
    batches = [
        Batch(job_id, collection, index, [d.to_dict() for d in chunk])
        for index, chunk in enumerate(split(docs, settings.batch_size))
    ]
    sample = context_sample(docs, settings.context_sample_size, settings.context_seed)
    payloads = [b.documents for b in batches] if queued else None
    svc.jobs.create(
        job_id,
        collection,
        len(docs),
        len(batches),
        sample,
        payloads=payloads,
        request_id=request_id,
    )
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
    check_model(service, collection)
    job_id, batches = _record(service, collection, docs, request_id=request_id)
    _run_here(service, batches, len(docs), on_progress)
    return job_id


def enqueue(
    collection: str, documents: Sequence[Any], *, service: Cdeq, request_id: str | None = None
) -> str:
    """Validate, record and queue a job for the workers (needs Redis); returns the job id.

    The job and all its documents are recorded in one transaction, then each batch is queued.
    If Redis fails while recording, this raises and there is no job. If it fails while
    queuing, the job exists and is returned: a worker's reconciler queues what was not sent,
    so the job still completes."""
    docs = _validate(service, collection, documents)
    if service.has("embedder"):  # a producer with the model (the API) refuses a mismatch now
        check_model(service, collection)
    dispatcher = service.dispatcher  # fails clearly before anything is recorded without Redis
    job_id = uuid.uuid4().hex
    try:
        job_id, batches = _record(
            service, collection, docs, job_id=job_id, queued=True, request_id=request_id
        )
    except StoreUnavailable as exc:
        raise StoreUnavailable(
            f"job {job_id} was not accepted: {exc} (if Redis recorded it before failing, a "
            f"worker completes it; `cdeq status {job_id}` tells once Redis is back)",
            retry_after_s=exc.retry_after_s,
        ) from exc
    try:
        for batch in batches:
            dispatcher.send_batch(job_id, batch.index, request_id=request_id)
        service.jobs.mark_dispatched(job_id)
    except StoreUnavailable as exc:
        log.warning(
            "job %s is recorded but not all its batches were queued (%s); a worker's "
            "reconciler queues the rest once Redis answers",
            job_id,
            exc,
        )
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
    check_model(service, collection)
    job_id, batches = _record(service, collection, docs)
    _run_here(service, batches, len(docs), on_progress)
    return service.jobs.status(job_id)


def check_model(service: Cdeq, collection: str) -> None:
    """ModelMismatch when `collection` exists and was embedded with another model (workers
    would fail every batch of the job with that reason); nothing for a new collection.
    InvalidInput when the chunk settings do not fit the model (every document would fail)."""
    with contextlib.suppress(NotFound):
        service.contexts.current(collection)
    chunk_documents(service, [Document(id="-", text="settings check")])


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
    svc: Cdeq,
    collection: str,
    documents: Sequence[Document],
    corpus: Callable[[], Corpus],
    population: Callable[[], int] | None = None,
) -> BatchOutcome:
    """Context (built on first use) → chunks → stage 2 → upsert → trim the chunks a longer
    earlier version left. Deterministic point ids make a repeated call overwrite instead of
    duplicating."""
    context = svc.contexts.ensure(collection, corpus, population)
    chunks, warnings = chunk_documents(svc, documents)
    # The same write as a rebuild's: fingerprint check, stage 2, BM25, upsert, trim.
    truncated = write_stored(svc, collection, chunks, context, trim=True)
    # A rebuild in progress (or a swap during this batch) needs these documents elsewhere too.
    mirror_documents(svc, collection, context, chunks)
    warning = truncation_warning(svc.embedder.max_seq_length)
    for c, cut in zip(chunks, truncated, strict=True):
        if cut:  # with chunking: only a chunk of one character longer than the window
            warnings.setdefault(c.document_id, warning)
    return BatchOutcome(
        succeeded=len(documents), truncated=len(warnings), warnings=warnings, chunks=len(chunks)
    )


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
        svc,
        batch.collection,
        docs,
        lambda: jobs.context_sample(batch.job_id),
        lambda: jobs.status(batch.job_id).total,
    )
    if jobs.record_batch(batch.job_id, batch.index, outcome) and jobs.status(batch.job_id).finished:
        after_ingest_job(svc, batch.collection)  # the automatic context upgrade policy
    return outcome


def fail_batch(svc: Cdeq, batch: Batch, reason: str) -> None:
    """Count a batch that will not be retried as failed, so its job still finishes."""
    svc.jobs.record_batch(
        batch.job_id, batch.index, BatchOutcome.all_failed(batch.document_ids, reason)
    )


def retry_countdown(
    retries: int, retry_after_s: float, cap_s: int, *, jitter: random.Random | None = None
) -> float:
    """max(the store's retry-after, 2^retries) seconds, capped, minus up to a quarter at random
    (so the batches that failed together do not all come back at the same instant)."""
    base = float(min(cap_s, max(retry_after_s, 2.0**retries)))
    spread = (jitter or random).uniform(0.75, 1.0)
    return max(min(retry_after_s, float(cap_s)), base * spread)


def batch_failed(svc: Cdeq, batch: Batch, exc: BaseException, *, retries: int) -> float | None:
    """The one failure policy of a batch, for workers and in-process runs alike.

    Transient errors (store unreachable, context being built elsewhere) give the countdown
    before the next try, until `max_retries`. Anything else, or retries exhausted, records
    the batch's documents as failed with the reason and gives None."""
    settings = svc.settings.ingest
    if isinstance(exc, TRANSIENT_ERRORS):
        if retries < settings.max_retries:
            return retry_countdown(retries, exc.retry_after_s, settings.retry_backoff_max_s)
        reason = f"failed after {retries} retries (CDEQ_INGEST__MAX_RETRIES): {exc}"
        count(svc, retries_exhausted=1)
    elif isinstance(exc, CdeqError):
        reason = str(exc)
        if isinstance(exc, ModelMismatch):  # refused to write another model's vectors
            count(svc, model_mismatches=1)
    else:  # a bug, not a fault of the input: keep the traceback in the log
        log.error("job %s batch %d: internal error", batch.job_id, batch.index, exc_info=exc)
        reason = f"internal error: {type(exc).__name__}: {exc}"
    log.error("job %s batch %d failed: %s", batch.job_id, batch.index, reason)
    fail_batch(svc, batch, reason)
    return None


# ---- queued deliveries: leases, crash counts, time limits ---------------------------------------
def start_delivery(svc: Cdeq, job_id: str, index: int, token: str) -> Batch | None:
    """Lease a queued batch for this run and load its documents. None when there is nothing
    to run: the batch is counted already, its job is gone or finished, or workers died on it
    `max_deliveries` times (its documents are then recorded as failed)."""
    decision, crashes = begin(svc, job_id, index, token)
    if decision == Start.MISSING:
        log.warning("job %s batch %d: the job does not exist (expired?); dropped", job_id, index)
        return None
    if decision == Start.SKIP:
        return None
    jobs = leased_jobs(svc)
    loaded = jobs.load_batch(job_id, index)
    if loaded is None:
        return None
    batch = Batch(job_id, loaded[0], index, loaded[1])
    if decision == Start.CRASHED_OUT:
        reason = crashed_reason(crashes)
        log.error("job %s batch %d failed: %s", job_id, index, reason)
        fail_batch(svc, batch, reason)
        jobs.end_delivery(job_id, index, None)
        return None
    if crashes:
        log.warning("job %s batch %d: delivery after %d crash(es)", job_id, index, crashes)
    return batch


def end_delivery(svc: Cdeq, batch: Batch, token: str, *, retry_in_s: float | None = None) -> None:
    """This run of the batch ended cleanly (see `app.deliveries.end`)."""
    end(svc, batch.job_id, batch.index, token, retry_in_s=retry_in_s)


def fail_timed_out(svc: Cdeq, job_id: str, index: int, reason: str) -> None:
    """A batch whose run was killed for its time limit (by the worker's parent process):
    record its documents as failed and end the delivery, so its job finishes."""
    jobs = leased_jobs(svc)
    loaded = jobs.load_batch(job_id, index)
    if loaded is not None:
        log.error("job %s batch %d failed: %s", job_id, index, reason)
        fail_batch(svc, Batch(job_id, loaded[0], index, loaded[1]), reason)
    jobs.end_delivery(job_id, index, None)
