"""Job records in Redis: one hash per job, and a Lua script that counts each batch once.

A set of done batch indices guards the counters inside one script, so a re-delivered batch can
never count twice, and the state only moves forward.
"""

from __future__ import annotations

import contextlib
import json
import time

import redis

from app.errors import NotFound, StoreUnavailable
from app.jobs.records import BatchOutcome, Corpus, JobState, JobStatus

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


def _redis_errors(what: str) -> StoreUnavailable:
    return StoreUnavailable(f"Redis is unreachable while {what}; retry shortly", retry_after_s=2.0)


class RedisJobStore:
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
        self,
        job_id: str,
        collection: str,
        total: int,
        batches: int,
        context_sample: Corpus,
        *,
        request_id: str | None = None,
    ) -> None:
        now = time.time()
        base, *_ = self._keys(job_id)
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(
                    base,
                    mapping={
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
                        **({"request_id": request_id} if request_id else {}),
                    },
                )
                pipe.expire(base, self.ttl_s)
                pipe.set(base + ":context", json.dumps(list(context_sample)), ex=self.ttl_s)
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
            str(batch_index),
            outcome.succeeded,
            outcome.failed,
            outcome.truncated,
            time.time(),
            json.dumps(outcome.errors or {}, ensure_ascii=False) if outcome.errors else "{}",
            json.dumps(outcome.warnings, ensure_ascii=False) if outcome.warnings else "{}",
            self.ttl_s,
        ]
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
            self.client.hset(
                KEY.format(job_id),
                mapping={"state": JobState.FAILED, "reason": reason, "updated_at": time.time()},
            )

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
        )
