"""Ingest jobs: their records in Redis and the use cases `enqueue` and `job_status`.

A job is split into batch tasks. Each batch is recorded at most once (a Redis set of done
batch indices guards the counters inside one Lua script), so a re-delivered batch can never
count twice, and the job state only moves forward: queued → running → done /
done_with_errors / failed.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from app.documents import Document, validate_documents
from app.errors import NotFound, StoreUnavailable

if TYPE_CHECKING:
    from app.service import Cdeq

STATES = ("queued", "running", "done", "done_with_errors", "failed")
FINAL_STATES = frozenset({"done", "done_with_errors", "failed"})
# Texts kept for a possible context build: stage 1 reads at most 512 tokens of each.
CONTEXT_TEXT_CHARS = 8_000
KEY = "cdeq:job:{}"

_RECORD_BATCH = """
-- KEYS: job hash, done-batches set, errors hash, warnings hash
-- ARGV: batch index, ok, failed, truncated, now, errors json, warnings json, ttl
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'succeeded', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'failed', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'truncated', ARGV[4])
local errors = cjson.decode(ARGV[6])
for id, reason in pairs(errors) do redis.call('HSET', KEYS[3], id, reason) end
local warnings = cjson.decode(ARGV[7])
for id, reason in pairs(warnings) do redis.call('HSET', KEYS[4], id, reason) end
local done = redis.call('SCARD', KEYS[2])
local batches = tonumber(redis.call('HGET', KEYS[1], 'batches'))
local state = 'running'
if done >= batches then
  local failed = tonumber(redis.call('HGET', KEYS[1], 'failed'))
  local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
  if failed >= total then state = 'failed' elseif failed > 0 then state = 'done_with_errors' else state = 'done' end
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[5])
end
local current = redis.call('HGET', KEYS[1], 'state')
if current == 'queued' or current == 'running' then redis.call('HSET', KEYS[1], 'state', state) end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[8]) end
return 1
"""

_MARK_RUNNING = """
if redis.call('HGET', KEYS[1], 'state') == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[1], 'updated_at', ARGV[1])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch did: counts and per-document reasons."""

    succeeded: int = 0
    failed: int = 0
    truncated: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # document id → why it is not stored
    warnings: dict[str, str] = field(default_factory=dict)  # document id → stored, but note this

    @classmethod
    def all_failed(cls, documents: Sequence[Document], reason: str) -> BatchOutcome:
        return cls(failed=len(documents), errors={d.id: reason for d in documents})


@dataclass(frozen=True)
class JobStatus:
    id: str
    collection: str
    state: str
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

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "collection": self.collection, "state": self.state,
            "total": self.total, "succeeded": self.succeeded, "failed": self.failed,
            "truncated": self.truncated, "batches": self.batches, "batches_done": self.batches_done,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "errors": self.errors, "warnings": self.warnings,
        }  # fmt: skip


def _redis_errors(what: str) -> StoreUnavailable:
    return StoreUnavailable(f"Redis is unreachable while {what}; retry shortly", retry_after_s=2.0)


class JobStore:
    """Job records in Redis."""

    def __init__(self, client: redis.Redis, *, ttl_s: int = 7 * 24 * 3600) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._record = client.register_script(_RECORD_BATCH)
        self._running = client.register_script(_MARK_RUNNING)

    @staticmethod
    def _keys(job_id: str) -> list[str]:
        base = KEY.format(job_id)
        return [base, base + ":done", base + ":errors", base + ":warnings"]

    def create(
        self, job_id: str, collection: str, total: int, batches: int, context_sample: list[dict[str, str]]
    ) -> None:
        now = time.time()
        base, *_ = self._keys(job_id)
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(base, mapping={
                    "id": job_id, "collection": collection, "state": "queued", "total": total,
                    "batches": batches, "succeeded": 0, "failed": 0, "truncated": 0,
                    "created_at": now, "updated_at": now,
                })  # fmt: skip
                pipe.expire(base, self.ttl_s)
                pipe.set(base + ":context", json.dumps(context_sample), ex=self.ttl_s)
                pipe.execute()
        except redis.RedisError as exc:
            raise _redis_errors("recording a job") from exc

    def context_sample(self, job_id: str) -> list[dict[str, str]]:
        try:
            raw = self.client.get(KEY.format(job_id) + ":context")
        except redis.RedisError as exc:
            raise _redis_errors("reading a job's context sample") from exc
        return json.loads(raw) if raw else []

    def mark_running(self, job_id: str) -> None:
        try:
            self._running(keys=[KEY.format(job_id)], args=[time.time()])
        except redis.RedisError as exc:
            raise _redis_errors("updating a job") from exc

    def batch_done(self, job_id: str, batch_index: int) -> bool:
        try:
            return bool(self.client.sismember(KEY.format(job_id) + ":done", str(batch_index)))
        except redis.RedisError as exc:
            raise _redis_errors("reading a job") from exc

    def record_batch(self, job_id: str, batch_index: int, outcome: BatchOutcome) -> bool:
        """Count a batch once; False when it was already counted (re-delivery)."""
        args: list[str | int | float] = [
            str(batch_index), outcome.succeeded, outcome.failed, outcome.truncated, time.time(),
            json.dumps(outcome.errors or {}, ensure_ascii=False) if outcome.errors else "{}",
            json.dumps(outcome.warnings, ensure_ascii=False) if outcome.warnings else "{}",
            self.ttl_s,
        ]  # fmt: skip
        try:
            result = self._record(keys=self._keys(job_id), args=args)
        except redis.RedisError as exc:
            raise _redis_errors("recording a batch") from exc
        if result == -1:
            raise NotFound(f"job {job_id!r} not found (expired or never created)")
        return bool(result == 1)

    def fail(self, job_id: str, reason: str) -> None:
        """Mark a job failed before any batch ran (e.g. its tasks could not be queued)."""
        # When Redis is down the caller already reports that the job was not accepted.
        with contextlib.suppress(redis.RedisError):
            self.client.hset(KEY.format(job_id), mapping={"state": "failed", "reason": reason, "updated_at": time.time()})

    def status(self, job_id: str) -> JobStatus:
        base, done, errors, warnings = self._keys(job_id)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(base)
                pipe.scard(done)
                pipe.hgetall(errors)
                pipe.hgetall(warnings)
                raw, n_done, errs, warns = pipe.execute()
        except redis.RedisError as exc:
            raise _redis_errors("reading a job") from exc
        if not raw:
            raise NotFound(f"job {job_id!r} not found (unknown or expired)")

        def s(key: str) -> str:
            value = raw.get(key.encode(), b"")
            return value.decode() if isinstance(value, bytes) else str(value)

        def dec(d: dict[bytes, bytes]) -> dict[str, str]:
            return {k.decode(): v.decode() for k, v in d.items()}

        return JobStatus(
            id=s("id"), collection=s("collection"), state=s("state"), total=int(s("total")),
            succeeded=int(s("succeeded")), failed=int(s("failed")), truncated=int(s("truncated")),
            batches=int(s("batches")), batches_done=int(n_done),
            created_at=float(s("created_at")), updated_at=float(s("updated_at")),
            errors=dec(errs), warnings=dec(warns),
        )  # fmt: skip


def context_sample(documents: Sequence[Document], n: int, seed: int) -> list[dict[str, str]]:
    """Up to `n` distinct documents of a job, seeded, kept in case this job's collection has
    no context yet (the first worker then builds one from them)."""
    picked = documents if len(documents) <= n else random.Random(seed).sample(list(documents), n)
    return [{"id": d.id, "text": d.text[:CONTEXT_TEXT_CHARS]} for d in picked]


def split(documents: Sequence[Document], size: int) -> list[list[Document]]:
    return [list(documents[i : i + size]) for i in range(0, len(documents), size)]


def enqueue(collection: str, documents: Sequence[Any], *, service: Cdeq | None = None) -> str:
    """Validate every document, record the job and queue its batches; returns the job id.

    On any invalid document nothing is queued and `InvalidInput` lists every problem."""
    from app.service import default_service

    svc = service or default_service()
    settings = svc.settings.ingest
    docs = validate_documents(
        collection, documents,
        max_documents=settings.max_documents_per_job, max_text_chars=settings.max_text_chars,
    )  # fmt: skip
    jobs = svc.jobs
    job_id = uuid.uuid4().hex
    batches = split(docs, settings.batch_size)
    sample = context_sample(docs, settings.context_sample_size, settings.context_seed)
    jobs.create(job_id, collection, len(docs), len(batches), sample)
    try:
        for index, batch in enumerate(batches):
            svc.dispatcher.send_batch(job_id, collection, index, [d.to_dict() for d in batch])
    except StoreUnavailable as exc:
        jobs.fail(job_id, f"could not queue all batches: {exc}")
        raise
    return job_id


def job_status(job_id: str, *, service: Cdeq | None = None) -> JobStatus:
    from app.service import default_service

    svc = service or default_service()
    return svc.jobs.status(job_id)
