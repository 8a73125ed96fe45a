"""Job records in Redis: one hash per job, its batches' documents, and Lua scripts that count
each batch once and keep a lease on each batch in flight.

A set of done batch indices guards the counters inside one script, so a re-delivered batch can
never count twice, and the state only moves forward. A job and all its batches' documents are
written in one transaction, so a job either exists whole or not at all; the queue messages
then carry only (job id, batch index).

Recovery state, for the reconciler (`app.reconcile`):
- `cdeq:leases` (sorted set, score = expiry) holds `<job>:<index>` for every batch a worker
  runs; its owner renews it (heartbeat) and drops it when the batch ends.
- `cdeq:job:<id>:deliveries` counts starts (`s:<i>`) and clean ends (`e:<i>`) of each batch:
  starts minus ends is how many times a worker died on it.
- `cdeq:jobs:active` lists the jobs not yet finished.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import redis

from app.errors import NotFound, StoreUnavailable
from app.jobs import lua
from app.jobs.records import CONTEXT_TEXT_CHARS, BatchOutcome, Corpus, JobState, JobStatus

KEY = "cdeq:job:{}"
LEASES = "cdeq:leases"
LEASE_OWNERS = "cdeq:leases:owner"
ACTIVE_JOBS = "cdeq:jobs:active"
METRICS = "cdeq:metrics"
RECONCILE_LOCK = "cdeq:lock:reconcile"


class Start(IntEnum):
    """What `begin_delivery` decided."""

    MISSING = -1  # the job does not exist (expired, or never recorded)
    SKIP = 0  # the batch is counted already, or the job is finished
    RUN = 1
    CRASHED_OUT = 2  # workers died on it `max_deliveries` times: fail it


@dataclass(frozen=True)
class JobProgress:
    """What the reconciler needs to know about an unfinished job."""

    job_id: str
    state: JobState
    batches: int
    done: frozenset[int]
    created_at: float
    activity_at: float  # last start, heartbeat or record of one of its batches
    redispatched_at: float
    dispatched: bool  # every batch was handed to the queue at least once

    @property
    def remaining(self) -> list[int]:
        return [i for i in range(self.batches) if i not in self.done]


def lease_member(job_id: str, index: int) -> str:
    return f"{job_id}:{index}"


def parse_member(member: str | bytes) -> tuple[str, int]:
    text = member.decode() if isinstance(member, bytes) else member
    job_id, _, index = text.rpartition(":")
    return job_id, int(index)


def _safe(text: str) -> str:
    """A string Redis can store: lone surrogates (valid in JSON input, not in UTF-8) are kept
    as visible escapes instead of failing the whole record."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _safe_map(d: Mapping[str, str]) -> dict[str, str]:
    return {_safe(str(k)): _safe(str(v)) for k, v in d.items()}


def _redis_errors(what: str) -> StoreUnavailable:
    return StoreUnavailable(f"Redis is unreachable while {what}; retry shortly", retry_after_s=2.0)


class RedisJobStore:
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
        payloads: Sequence[Sequence[Mapping[str, Any]]] | None = None,
        request_id: str | None = None,
    ) -> None:
        """Record a job; with `payloads` (each batch's documents) in the same transaction, so
        a failure leaves either no job or a whole one that the reconciler can finish. The
        context sample is then kept as references into the payloads, not as a second copy."""
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
        }
        if request_id:
            record["request_id"] = request_id
        if payloads is not None:
            record["dispatched"] = 0
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
            raise _redis_errors("recording a job") from exc

    def load_batch(self, job_id: str, index: int) -> tuple[str, list[dict[str, Any]]] | None:
        """(collection, documents) of one batch; None once its job has finished."""
        base = KEY.format(job_id)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hget(base, "collection")
                pipe.hget(base + ":batches", str(index))
                collection, raw = pipe.execute()
        except redis.RedisError as exc:
            raise _redis_errors("reading a batch") from exc
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
            raise _redis_errors("reading a job's context sample") from exc
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
            raise _redis_errors("updating a job") from exc

    def mark_dispatched(self, job_id: str, *, redispatched: bool = False) -> None:
        """Every remaining batch of the job has been handed to the queue (again)."""
        fields: dict[Any, Any] = {"dispatched": 1}
        if redispatched:
            fields["redispatched_at"] = time.time()
        try:
            if self.client.exists(KEY.format(job_id)):  # never re-create an expired job
                self.client.hset(KEY.format(job_id), mapping=fields)
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
            json.dumps(_safe_map(outcome.errors), ensure_ascii=False) if outcome.errors else "{}",
            json.dumps(_safe_map(outcome.warnings), ensure_ascii=False)
            if outcome.warnings
            else "{}",
            self.ttl_s,
            job_id,
        ]
        keys = [*self._keys(job_id), *self._extra_keys(job_id), ACTIVE_JOBS]
        try:
            result = self._record(keys=keys, args=args)
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
            self.client.srem(ACTIVE_JOBS, job_id)

    # ---- leases (one per batch in flight) ----------------------------------------------------
    def begin_delivery(
        self, job_id: str, index: int, token: str, *, lease_ttl_s: float, max_deliveries: int
    ) -> tuple[Start, int]:
        """Take the lease of a batch and count the delivery; (decision, crashes so far)."""
        base = KEY.format(job_id)
        now = time.time()
        try:
            code, crashes = self._begin(
                keys=[base, base + ":done", base + ":deliveries", LEASES, LEASE_OWNERS, METRICS],
                args=[
                    str(index),
                    lease_member(job_id, index),
                    now + lease_ttl_s,
                    token,
                    max_deliveries,
                    now,
                    self.ttl_s,
                ],
            )
        except redis.RedisError as exc:
            raise _redis_errors("leasing a batch") from exc
        return Start(int(code)), int(crashes)

    def end_delivery(
        self, job_id: str, index: int, token: str | None, *, keep_for_s: float = 0.0
    ) -> None:
        """A delivery ended cleanly: count it and drop the lease, or keep it `keep_for_s`
        longer (a retry is scheduled: the batch stays covered until the retry starts).
        `token=None` ends whichever delivery holds the lease (the worker's parent process
        after a hard time limit)."""
        keep_until = time.time() + keep_for_s if keep_for_s > 0 else 0
        try:
            self._end(
                keys=[KEY.format(job_id) + ":deliveries", LEASES, LEASE_OWNERS],
                args=[str(index), lease_member(job_id, index), token or "", keep_until, self.ttl_s],
            )
        except redis.RedisError as exc:
            raise _redis_errors("releasing a batch") from exc

    def renew_leases(self, held: Mapping[str, str], lease_ttl_s: float) -> int:
        """Heartbeat: push the expiry of the leases this process still owns
        (`held`: lease member → token); how many were renewed."""
        if not held:
            return 0
        now = time.time()
        members = list(held.items())
        keys = [LEASES, LEASE_OWNERS, *(KEY.format(parse_member(m)[0]) for m, _ in members)]
        args: list[str | float] = [now + lease_ttl_s, now]
        for member, token in members:
            args += [member, token]
        try:
            return int(self._renew(keys=keys, args=args))
        except redis.RedisError as exc:
            raise _redis_errors("renewing leases") from exc

    # ---- what the reconciler reads -----------------------------------------------------------
    def claim_expired_leases(self) -> list[tuple[str, int]]:
        """Remove and return the leases whose holder stopped heartbeating (atomic: two
        reconcilers never claim the same one)."""
        try:
            members = self._claim(keys=[LEASES, LEASE_OWNERS, METRICS], args=[time.time()])
        except redis.RedisError as exc:
            raise _redis_errors("reading leases") from exc
        return [parse_member(m) for m in members]

    def leased_jobs(self) -> set[str]:
        """Jobs with at least one live lease."""
        try:
            members = self.client.zrange(LEASES, 0, -1)
        except redis.RedisError as exc:
            raise _redis_errors("reading leases") from exc
        return {parse_member(m)[0] for m in members if isinstance(m, str | bytes)}

    def active_jobs(self) -> list[str]:
        try:
            members = self.client.smembers(ACTIVE_JOBS)
        except redis.RedisError as exc:
            raise _redis_errors("reading jobs") from exc
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    def progress(self, job_id: str) -> JobProgress | None:
        """An unfinished job's progress; None (and forgotten as active) once it is finished or
        gone."""
        base = KEY.format(job_id)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(base)
                pipe.smembers(base + ":done")
                raw, done = pipe.execute()
            state = JobState(raw[b"state"].decode()) if raw else None
            if state is None or state.final:
                self.client.srem(ACTIVE_JOBS, job_id)
                return None
        except redis.RedisError as exc:
            raise _redis_errors("reading a job") from exc

        def num(key: str) -> float:
            return float(raw.get(key.encode(), b"0") or 0)

        return JobProgress(
            job_id=job_id,
            state=state,
            batches=int(num("batches")),
            done=frozenset(int(i) for i in done),
            created_at=num("created_at"),
            activity_at=num("activity_at"),
            redispatched_at=num("redispatched_at"),
            dispatched=raw.get(b"dispatched", b"1") == b"1",
        )

    def try_reconcile_lock(self, ttl_s: float) -> bool:
        """One reconciler at a time across workers: True when this caller may run now."""
        try:
            return bool(
                self.client.set(RECONCILE_LOCK, str(time.time()), nx=True, px=int(ttl_s * 1000))
            )
        except redis.RedisError as exc:
            raise _redis_errors("taking the reconcile lock") from exc

    # ---- counters for /metrics ---------------------------------------------------------------
    def count(self, **increments: int) -> None:
        """Add to the shared recovery counters (reconciled_batches, oom_splits, …)."""
        increments = {k: v for k, v in increments.items() if v}
        if not increments:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for name, value in increments.items():
                    pipe.hincrby(METRICS, name, value)
                pipe.execute()
        except redis.RedisError as exc:
            raise _redis_errors("counting") from exc

    def counters(self) -> dict[str, int]:
        try:
            raw = self.client.hgetall(METRICS)
        except redis.RedisError as exc:
            raise _redis_errors("reading counters") from exc
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}

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
