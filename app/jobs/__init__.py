"""Jobs: their records (types), and where records live (Redis, or this process's memory)."""

from app.jobs.memory_store import MemoryJobStore
from app.jobs.records import (
    BatchOutcome,
    Corpus,
    JobKind,
    JobState,
    JobStatus,
    JobStore,
    context_sample,
    final_state,
    split,
)
from app.jobs.redis_store import JobProgress, RedisJobStore, Start

__all__ = [
    "BatchOutcome",
    "Corpus",
    "JobKind",
    "JobProgress",
    "JobState",
    "JobStatus",
    "JobStore",
    "MemoryJobStore",
    "RedisJobStore",
    "Start",
    "context_sample",
    "final_state",
    "split",
]
