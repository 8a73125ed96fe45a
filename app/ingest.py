"""Ingest use cases: embed a batch against its collection's context and store it in Qdrant.

`process_batch` is what a worker runs for one queued batch (idempotent under re-delivery);
`ingest_documents` is the whole job in this process (embedded mode, no queue).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from app.documents import Document, validate_documents
from app.jobs import BatchOutcome, JobStatus, context_sample, split
from app.store import PointRecord

if TYPE_CHECKING:
    from app.contexts import Corpus
    from app.service import Cdeq

Progress = Callable[[int, int], None]


def truncation_warning(max_tokens: int) -> str:
    return f"truncated: only the first {max_tokens} tokens were embedded"


def store_batch(svc: Cdeq, collection: str, documents: Sequence[Document], corpus: Callable[[], Corpus]) -> BatchOutcome:
    """Context (built on first use) → stage 2 → upsert. Deterministic point ids make a
    repeated call overwrite instead of duplicating."""
    context = svc.contexts.ensure(collection, corpus)
    embeddings = svc.embedder.embed_documents([d.text for d in documents], context.dataset_embeddings)
    svc.store.upsert(
        context.physical,
        [
            PointRecord(
                document_id=d.id, vector=vector, text=d.text, metadata=d.metadata,
                content_hash=d.content_hash, context_version=context.version,
            )
            for d, vector in zip(documents, embeddings.vectors, strict=True)
        ],
    )
    warning = truncation_warning(svc.embedder.max_seq_length)
    truncated = {d.id: warning for d, cut in zip(documents, embeddings.truncated, strict=True) if cut}
    return BatchOutcome(succeeded=len(documents), truncated=len(truncated), warnings=truncated)


def process_batch(
    svc: Cdeq, job_id: str, collection: str, index: int, documents: list[dict[str, Any]]
) -> BatchOutcome | None:
    """One queued batch. Returns None when the batch was already counted (re-delivery after
    the record was written): the points exist, nothing is done twice."""
    jobs = svc.jobs
    if jobs.batch_done(job_id, index):
        return None
    jobs.mark_running(job_id)
    docs = [Document(id=d["id"], text=d["text"], metadata=d.get("metadata") or {}) for d in documents]
    outcome = store_batch(svc, collection, docs, lambda: jobs.context_sample(job_id))
    jobs.record_batch(job_id, index, outcome)
    return outcome


def fail_batch(svc: Cdeq, job_id: str, index: int, documents: list[dict[str, Any]], reason: str) -> None:
    """Count a batch that will not be retried as failed, so its job still finishes."""
    docs = [Document(id=d["id"], text=d["text"]) for d in documents]
    svc.jobs.record_batch(job_id, index, BatchOutcome.all_failed(docs, reason))


def ingest_documents(
    collection: str,
    documents: Sequence[Any],
    *,
    service: Cdeq | None = None,
    on_progress: Progress | None = None,
) -> JobStatus:
    """Validate, embed and store `documents` in this process (no queue); returns the outcome.

    Used by the embedded mode (`cdeq ingest` without Redis) and by callers that want the
    result synchronously. Raises InvalidInput listing every bad document before any work."""
    from app.service import default_service

    svc = service or default_service()
    settings = svc.settings.ingest
    docs = validate_documents(
        collection, documents,
        max_documents=settings.max_documents_per_job, max_text_chars=settings.max_text_chars,
    )  # fmt: skip
    sample = context_sample(docs, settings.context_sample_size, settings.context_seed)
    batches = split(docs, settings.batch_size)
    started = time.time()
    warnings: dict[str, str] = {}
    done = 0
    for batch in batches:
        warnings.update(store_batch(svc, collection, batch, lambda: sample).warnings)
        done += len(batch)
        if on_progress is not None:
            on_progress(done, len(docs))
    updated = time.time()
    return JobStatus(
        id=f"inline-{uuid.uuid4().hex[:12]}", collection=collection, state="done", total=len(docs),
        batches=len(batches), batches_done=len(batches), created_at=started, updated_at=updated,
        succeeded=len(docs), failed=0, truncated=len(warnings), warnings=warnings, errors={},
    )  # fmt: skip
