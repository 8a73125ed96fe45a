"""Recovery state of queued jobs in Redis: a lease on each batch in flight, delivery counts,
the set of unfinished jobs and the shared recovery counters, for the reconciler
(`app.reconcile`). Ingest batches and context-rebuild batches use it alike.

- `cdeq:leases` (sorted set, score = expiry) holds `<job>:<index>` for every batch a worker
  runs; its owner renews it (heartbeat) and drops it when the batch ends.
- `cdeq:job:<id>:deliveries` counts starts (`s:<i>`) and clean ends (`e:<i>`) of each batch:
  starts minus ends is how many times a worker died on it.
- `cdeq:jobs:active` lists the jobs not yet finished.
- `cdeq:metrics` (hash) holds the recovery counters served on /metrics.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import redis

from app.errors import StoreUnavailable
from app.jobs.records import JobKind, JobState

KEY = "cdeq:job:{}"
LEASES = "cdeq:leases"
LEASE_OWNERS = "cdeq:leases:owner"
ACTIVE_JOBS = "cdeq:jobs:active"
METRICS = "cdeq:metrics"
RECONCILE_LOCK = "cdeq:lock:reconcile"


def redis_errors(what: str) -> StoreUnavailable:
    return StoreUnavailable(f"Redis is unreachable while {what}; retry shortly", retry_after_s=2.0)


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
    kind: JobKind = JobKind.INGEST
    collection: str = ""

    @property
    def remaining(self) -> list[int]:
        return [i for i in range(self.batches) if i not in self.done]


def lease_member(job_id: str, index: int) -> str:
    return f"{job_id}:{index}"


def parse_member(member: str | bytes) -> tuple[str, int]:
    text = member.decode() if isinstance(member, bytes) else member
    job_id, _, index = text.rpartition(":")
    return job_id, int(index)


class Recovery:
    """The recovery half of `RedisJobStore` (a mixin: the store registers the scripts)."""

    client: redis.Redis
    ttl_s: int
    _begin: Any
    _end: Any
    _renew: Any
    _claim: Any

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
            raise redis_errors("leasing a batch") from exc
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
            raise redis_errors("releasing a batch") from exc

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
            raise redis_errors("renewing leases") from exc

    # ---- what the reconciler reads -----------------------------------------------------------
    def claim_expired_leases(self) -> list[tuple[str, int]]:
        """Remove and return the leases whose holder stopped heartbeating (atomic: two
        reconcilers never claim the same one)."""
        try:
            members = self._claim(keys=[LEASES, LEASE_OWNERS, METRICS], args=[time.time()])
        except redis.RedisError as exc:
            raise redis_errors("reading leases") from exc
        return [parse_member(m) for m in members]

    def redis_uptime_s(self) -> float:
        """Seconds since the Redis server started (a restart starts it again from 0)."""
        try:
            info = self.client.info("server")
        except redis.RedisError as exc:
            raise redis_errors("reading the server's uptime") from exc
        return float(info.get("uptime_in_seconds", 0))

    def leased_jobs(self) -> set[str]:
        """Jobs with at least one live lease."""
        try:
            members = self.client.zrange(LEASES, 0, -1)
        except redis.RedisError as exc:
            raise redis_errors("reading leases") from exc
        return {parse_member(m)[0] for m in members if isinstance(m, str | bytes)}

    def active_jobs(self) -> list[str]:
        try:
            members = self.client.smembers(ACTIVE_JOBS)
        except redis.RedisError as exc:
            raise redis_errors("reading jobs") from exc
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
            raise redis_errors("reading a job") from exc

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
            kind=JobKind(raw.get(b"kind", b"ingest").decode()),
            collection=raw.get(b"collection", b"").decode(),
        )

    def kind_of(self, job_id: str) -> JobKind | None:
        """What the job's batches do; None when the job is gone."""
        try:
            raw = self.client.hmget(KEY.format(job_id), ["kind", "state"])
        except redis.RedisError as exc:
            raise redis_errors("reading a job") from exc
        kind, state = raw
        if state is None:
            return None
        if not kind:
            return JobKind.INGEST
        return JobKind(kind.decode() if isinstance(kind, bytes) else str(kind))

    def try_reconcile_lock(self, ttl_s: float) -> bool:
        """One reconciler at a time across workers: True when this caller may run now."""
        try:
            return bool(
                self.client.set(RECONCILE_LOCK, str(time.time()), nx=True, px=int(ttl_s * 1000))
            )
        except redis.RedisError as exc:
            raise redis_errors("taking the reconcile lock") from exc

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
            raise redis_errors("counting") from exc

    def counters(self) -> dict[str, int]:
        try:
            raw = self.client.hgetall(METRICS)
        except redis.RedisError as exc:
            raise redis_errors("reading counters") from exc
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
