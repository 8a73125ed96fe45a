"""Job records in this process's memory, for in-process mode (no Redis).

Same contract as the Redis job store: a batch is counted once, the state only moves forward.
Records live as long as the process; the oldest are forgotten past `max_jobs`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from app.errors import NotFound
from app.jobs.records import BatchOutcome, Corpus, JobKind, JobState, JobStatus, final_state


@dataclass
class _Job:
    status: JobStatus
    sample: list[dict[str, str]]
    done: set[int] = field(default_factory=set)


class MemoryJobStore:
    def __init__(self, *, max_jobs: int = 1000) -> None:
        self.max_jobs = max_jobs
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._lock = threading.Lock()

    def _get(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id!r} not found (unknown, or forgotten by this process)")
        return job

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
    ) -> None:
        # `payloads` matter to a queue only: in-process batches stay in the caller's memory.
        now = time.time()
        status = JobStatus(
            id=job_id,
            collection=collection,
            state=JobState.QUEUED,
            total=total,
            succeeded=0,
            failed=0,
            truncated=0,
            batches=batches,
            batches_done=0,
            created_at=now,
            updated_at=now,
            request_id=request_id,
        )
        with self._lock:
            self._jobs[job_id] = _Job(status, list(context_sample))
            while len(self._jobs) > self.max_jobs:
                self._jobs.popitem(last=False)

    def context_sample(self, job_id: str) -> list[dict[str, str]]:
        with self._lock:
            return list(self._get(job_id).sample)

    def mark_running(self, job_id: str) -> None:
        with self._lock:
            job = self._get(job_id)
            if job.status.state == JobState.QUEUED:
                job.status = replace(job.status, state=JobState.RUNNING, updated_at=time.time())

    def mark_dispatched(self, job_id: str, *, redispatched: bool = False) -> None:
        """Nothing to do: in-process jobs are never queued."""

    def batch_done(self, job_id: str, batch_index: int) -> bool:
        with self._lock:
            return batch_index in self._get(job_id).done

    def record_batch(self, job_id: str, batch_index: int, outcome: BatchOutcome) -> bool:
        with self._lock:
            job = self._get(job_id)
            if batch_index in job.done:
                return False
            job.done.add(batch_index)
            s = job.status
            failed = s.failed + outcome.failed
            state = JobState.RUNNING
            if len(job.done) >= s.batches:
                state = final_state(s.total, failed)
            job.status = replace(
                s,
                state=state if not s.state.final else s.state,
                succeeded=s.succeeded + outcome.succeeded,
                failed=failed,
                truncated=s.truncated + outcome.truncated,
                chunks=s.chunks + outcome.chunks,
                batches_done=len(job.done),
                updated_at=time.time(),
                errors={**s.errors, **outcome.errors},
                warnings={**s.warnings, **outcome.warnings},
            )
            return True

    def fail(self, job_id: str, reason: str) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status.finished:
                return False
            job.status = replace(
                job.status, state=JobState.FAILED, reason=reason, updated_at=time.time()
            )
            return True

    def status(self, job_id: str) -> JobStatus:
        with self._lock:
            return self._get(job_id).status
