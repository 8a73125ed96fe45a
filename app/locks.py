"""Locks that keep a collection's context build to one builder at a time.

With Redis the lock is shared by every worker process; in-process mode needs only a thread
lock (one process owns the local Qdrant folder).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import redis

from app.errors import ContextNotReady, StoreUnavailable

log = logging.getLogger(__name__)

LockFactory = Callable[[str], AbstractContextManager[None]]


def redis_lock_factory(client: redis.Redis, *, timeout_s: int, wait_s: float) -> LockFactory:
    """Cross-process lock: one worker builds a collection's context, the others retry."""

    @contextmanager
    def lock(collection: str) -> Iterator[None]:
        handle = client.lock(
            f"cdeq:lock:context:{collection}", timeout=timeout_s, blocking_timeout=wait_s
        )
        try:
            acquired = handle.acquire()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis is unreachable ({exc})", retry_after_s=2.0) from exc
        if not acquired:
            raise ContextNotReady(
                f"the context of {collection!r} is being built by another worker",
                retry_after_s=5.0,
            )
        try:
            yield
        finally:
            try:
                handle.release()
            except redis.exceptions.LockError:
                log.warning("context lock of %r expired before the build finished", collection)

    return lock


def thread_lock_factory() -> LockFactory:
    """In-process lock: one lock per collection, made on first use."""
    locks: dict[str, threading.Lock] = {}
    guard = threading.Lock()

    @contextmanager
    def lock(collection: str) -> Iterator[None]:
        with guard:
            one = locks.setdefault(collection, threading.Lock())
        with one:
            yield

    return lock
