"""What a job is: its states, one batch's outcome, and the status callers read.

A job is the documents of one `submit` call; it is split into batches, and each batch is
recorded exactly once. The state only moves forward: queued → running → done /
done_with_errors / failed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from app.documents import Document

# Texts kept for a possible context build: stage 1 reads at most 512 tokens of each.
CONTEXT_TEXT_CHARS = 8_000

Corpus = Sequence[
    dict[str, str]
]  # [{"id": ..., "text": ...}]: documents a context may be built from


class JobKind(StrEnum):
    """What a job's batches do: store submitted documents, or re-embed a collection."""

    INGEST = "ingest"
    REBUILD = "rebuild"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DONE_WITH_ERRORS = "done_with_errors"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in (JobState.DONE, JobState.DONE_WITH_ERRORS, JobState.FAILED)


def final_state(total: int, failed: int) -> JobState:
    """The state of a job whose batches are all recorded."""
    if failed >= total:
        return JobState.FAILED
    return JobState.DONE_WITH_ERRORS if failed > 0 else JobState.DONE


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch did: counts and per-document reasons."""

    succeeded: int = 0
    failed: int = 0
    truncated: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # document id → why it is not stored
    warnings: dict[str, str] = field(default_factory=dict)  # document id → stored, but note this
    chunks: int = 0  # points written: one per chunk of each stored document

    @classmethod
    def all_failed(cls, document_ids: Sequence[str], reason: str) -> BatchOutcome:
        return cls(failed=len(document_ids), errors={i: reason for i in document_ids})


@dataclass(frozen=True)
class JobStatus:
    id: str
    collection: str
    state: JobState
    total: int
    succeeded: int
    failed: int
    truncated: int
    batches: int
    batches_done: int
    created_at: float
    updated_at: float
    errors: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, str] = field(default_factory=dict)
    reason: str = ""  # why a whole job failed (e.g. its batches could not be queued)
    request_id: str | None = None  # the API request that created the job (X-Request-ID)
    chunks: int = 0  # chunks stored (points written) for the succeeded documents

    @property
    def finished(self) -> bool:
        return self.state.final

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "collection": self.collection,
            "state": str(self.state),
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "truncated": self.truncated,
            "chunks": self.chunks,
            "batches": self.batches,
            "batches_done": self.batches_done,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "errors": self.errors,
            "warnings": self.warnings,
        }
        if self.reason:
            body["reason"] = self.reason
        if self.request_id:
            body["request_id"] = self.request_id
        return body


class JobStore(Protocol):
    """Where job records live: Redis with a queue, this process's memory without one."""

    def create(
        self,
        job_id: str,
        collection: str,
        total: int,
        batches: int,
        context_sample: Corpus,
        payloads: Sequence[Sequence[Any]] | None = None,
        request_id: str | None = None,
        kind: JobKind = JobKind.INGEST,
    ) -> None: ...

    def context_sample(self, job_id: str) -> list[dict[str, str]]: ...

    def mark_running(self, job_id: str) -> None: ...

    def mark_dispatched(self, job_id: str, *, redispatched: bool = False) -> None: ...

    def batch_done(self, job_id: str, batch_index: int) -> bool: ...

    def record_batch(self, job_id: str, batch_index: int, outcome: BatchOutcome) -> bool: ...

    def fail(self, job_id: str, reason: str) -> bool: ...

    def status(self, job_id: str) -> JobStatus: ...


def context_sample(documents: Sequence[Document], n: int, seed: int) -> list[dict[str, str]]:
    """Up to `n` distinct documents of a job, seeded, kept in case this job's collection has
    no context yet (the first batch then builds one from them)."""
    picked = documents if len(documents) <= n else random.Random(seed).sample(list(documents), n)
    return [{"id": d.id, "text": d.text[:CONTEXT_TEXT_CHARS]} for d in picked]


def split(documents: Sequence[Document], size: int) -> list[list[Document]]:
    return [list(documents[i : i + size]) for i in range(0, len(documents), size)]
