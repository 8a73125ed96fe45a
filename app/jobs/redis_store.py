"""Job records in Redis: one hash per job, its batches' payloads, and Lua scripts that count
each batch once (the leases and delivery counts of batches in flight: `app.jobs.recovery`).

A set of done batch indices guards the counters inside one script, so a re-delivered batch can
never count twice, and the state only moves forward. A job and all its batches' payloads (an
ingest batch's documents, a rebuild batch's point ids) are written in one transaction, so a
job either exists whole or not at all; the queue messages then carry only (job id, batch
index), and the reconciler can queue any batch again from the record alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from app.errors import NotFound
from app.jobs import lua
from app.jobs.records import (
    CONTEXT_TEXT_CHARS,
    BatchOutcome,
    Corpus,
    JobKind,
    JobState,
    JobStatus,
)
from app.jobs.recovery import (
    ACTIVE_JOBS,
    KEY,
    JobProgress,
    Recovery,
    Start,
    lease_member,
    parse_member,
    redis_errors,
)

__all__ = ["JobProgress", "RedisJobStore", "Start", "lease_member", "parse_member"]


def _safe(text: str) -> str:
    """A string Redis can store: lone surrogates (valid in JSON input, not in UTF-8) are kept
    as visible escapes instead of failing the whole record."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _safe_map(d: Mapping[str, str]) -> dict[str, str]:
    return {_safe(str(k)): _safe(str(v)) for k, v in d.items()}


class RedisJobStore(Recovery):
    """Job records in Redis."""

    def __init__(self, client: redis.Redis, *, ttl_s: int = 7 * 24 * 3600) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._record = client.register_script(lua.RECORD_BATCH)
        self._running = client.register_script(lua.MARK_RUNNING)
        self._begin = client.register_script(lua.BEGIN)
        self._end = client.register_script(lua.END)
        self._renew = client.register_script(lua.RENEW)
        self._claim = client.register_script(lua.CLAIM_EXPIRED)
        self._fail = client.register_script(lua.FAIL)

    @staticmethod
    def _keys(job_id: str) -> list[str]:
        base = KEY.format(job_id)
        return [base, base + ":done", base + ":errors", base + ":warnings"]

    @staticmethod
    def _extra_keys(job_id: str) -> list[str]:
        base = KEY.format(job_id)
        return [base + ":batches", base + ":context", base + ":deliveries"]

    # ---- a job's life ------------------------------------------------------------------------
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
        """Record a job; with `payloads` (each batch's documents, or a rebuild batch's point
        ids) in the same transaction, so a failure leaves either no job or a whole one that the
        reconciler can finish. An ingest job's context sample is then kept as references into
        the payloads, not as a second copy."""
        now = time.time()
        base, *_ = self._keys(job_id)
        batches_key, context_key, _ = self._extra_keys(job_id)
        record: dict[Any, Any] = {
            "id": job_id,
            "collection": collection,
            "state": "queued",
            "total": total,
            "batches": batches,
            "succeeded": 0,
            "failed": 0,
            "truncated": 0,
            "created_at": now,
            "updated_at": now,
            "kind": str(kind),
        }
        if request_id:
            record["request_id"] = request_id
        if payloads is not None:
            record["dispatched"] = 0
        if payloads is not None and kind == JobKind.INGEST:
            where = {
                str(doc["id"]): [b, p]
                for b, docs in enumerate(payloads)
                for p, doc in enumerate(docs)
            }
            sample_json = json.dumps({"refs": [where[str(d["id"])] for d in context_sample]})
        else:
            sample_json = json.dumps(list(context_sample))
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(base, mapping=record)
                pipe.expire(base, self.ttl_s)
                pipe.set(context_key, sample_json, ex=self.ttl_s)
                if payloads is not None:
                    for start in range(0, len(payloads), 500):  # bounded HSET arguments
                        pipe.hset(
                            batches_key,
                            mapping={
                                str(i): json.dumps(list(payloads[i]))
                                for i in range(start, min(start + 500, len(payloads)))
                            },
                        )
                    pipe.expire(batches_key, self.ttl_s)
                    pipe.sadd(ACTIVE_JOBS, job_id)
                pipe.execute()
        except redis.RedisError as exc:
            raise redis_errors("recording a job") from exc

    def load_batch(self, job_id: str, index: int) -> tuple[str, list[Any]] | None:
        """(collection, payload) of one batch (documents, or a rebuild's point ids); None
        once its job has finished."""
        base = KEY.format(job_id)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hget(base, "collection")
                pipe.hget(base + ":batches", str(index))
                collection, raw = pipe.execute()
        except redis.RedisError as exc:
            raise redis_errors("reading a batch") from exc
        if collection is None:
            raise NotFound(f"job {job_id!r} not found (expired or never created)")
        if raw is None:
            return None
        return collection.decode(), json.loads(raw)

    def context_sample(self, job_id: str) -> list[dict[str, str]]:
        try:
            raw = self.client.get(KEY.format(job_id) + ":context")
            if not raw:
                return []
            data = json.loads(raw)
            if isinstance(data, list):
                return data
            refs: list[list[int]] = data["refs"]
            wanted = sorted({b for b, _ in refs})
            if not wanted:
                return []
            docs = self.client.hmget(KEY.format(job_id) + ":batches", [str(b) for b in wanted])
        except redis.RedisError as exc:
            raise redis_errors("reading a job's context sample") from exc
        payloads = {b: json.loads(d) for b, d in zip(wanted, docs, strict=True) if d}
        return [
            {"id": str(payloads[b][p]["id"]), "text": payloads[b][p]["text"][:CONTEXT_TEXT_CHARS]}
            for b, p in refs
            if b in payloads
        ]

    def mark_running(self, job_id: str) -> None:
        try:
            self._running(keys=[KEY.format(job_id)], args=[time.time()])
        except redis.RedisError as exc:
            raise redis_errors("updating a job") from exc

    def mark_dispatched(self, job_id: str, *, redispatched: bool = False) -> None:
        """Every remaining batch of the job has been handed to the queue (again)."""
        fields: dict[Any, Any] = {"dispatched": 1}
        if redispatched:
            fields["redispatched_at"] = time.time()
        try:
            if self.client.exists(KEY.format(job_id)):  # never re-create an expired job
                self.client.hset(KEY.format(job_id), mapping=fields)
        except redis.RedisError as exc:
            raise redis_errors("updating a job") from exc

    def batch_done(self, job_id: str, batch_index: int) -> bool:
        try:
            return bool(self.client.sismember(KEY.format(job_id) + ":done", str(batch_index)))
        except redis.RedisError as exc:
            raise redis_errors("reading a job") from exc

    def record_batch(self, job_id: str, batch_index: int, outcome: BatchOutcome) -> bool:
        """Count a batch once; False when it was already counted (re-delivery)."""
        args: list[str | int | float] = [
            str(batch_index),
            outcome.succeeded,
            outcome.failed,
            outcome.truncated,
            time.time(),
            json.dumps(_safe_map(outcome.errors), ensure_ascii=False) if outcome.errors else "{}",
            json.dumps(_safe_map(outcome.warnings), ensure_ascii=False)
            if outcome.warnings
            else "{}",
            self.ttl_s,
            job_id,
            outcome.chunks,
        ]
        keys = [*self._keys(job_id), *self._extra_keys(job_id), ACTIVE_JOBS]
        try:
            result = self._record(keys=keys, args=args)
        except redis.RedisError as exc:
            raise redis_errors("recording a batch") from exc
        if result == -1:
            raise NotFound(f"job {job_id!r} not found (expired or never created)")
        return bool(result == 1)

    def fail(self, job_id: str, reason: str) -> bool:
        """Mark an unfinished job failed with `reason` (e.g. its tasks could not be queued, or
        a rebuild was given up); False when it had finished already or Redis is down."""
        # When Redis is down the caller already reports that the job was not accepted.
        try:
            return bool(
                self._fail(
                    keys=[KEY.format(job_id), ACTIVE_JOBS],
                    args=[_safe(reason), time.time(), job_id],
                )
            )
        except redis.RedisError:
            return False

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
            raise redis_errors("reading a job") from exc
        if not raw:
            raise NotFound(f"job {job_id!r} not found (unknown or expired)")

        def s(key: str) -> str:
            value = raw.get(key.encode(), b"")
            return value.decode() if isinstance(value, bytes) else str(value)

        def dec(d: dict[bytes, bytes]) -> dict[str, str]:
            return {k.decode(): v.decode() for k, v in d.items()}

        return JobStatus(
            id=s("id"),
            collection=s("collection"),
            state=JobState(s("state")),
            total=int(s("total")),
            succeeded=int(s("succeeded")),
            failed=int(s("failed")),
            truncated=int(s("truncated")),
            batches=int(s("batches")),
            batches_done=int(n_done),
            created_at=float(s("created_at")),
            updated_at=float(s("updated_at")),
            errors=dec(errs),
            warnings=dec(warns),
            reason=s("reason"),
            request_id=s("request_id") or None,
            chunks=int(s("chunks") or 0),
        )
