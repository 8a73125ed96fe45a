"""Locks that keep a collection's context build to one builder at a time.

With Redis the lock is shared by every worker process; in-process mode needs only a thread
lock (one process owns the local Qdrant folder). The Redis lock has a short TTL that a thread
renews while the build runs, so a builder that dies loses its lock within one TTL and another
worker takes over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import redis
from redis.lock import Lock

from app.errors import ContextNotReady, StoreUnavailable

log = logging.getLogger(__name__)

LockFactory = Callable[[str], AbstractContextManager[None]]


LOCK_KEY = "cdeq:lock:context:{}"


def _renew_while_held(handle: Lock, ttl_s: float, stop: threading.Event, name: str) -> None:
    """Extend the lock to a full TTL every third of it, until `stop` is set."""
    while not stop.wait(ttl_s / 3):
        try:
            handle.reacquire()
        except redis.RedisError as exc:  # LockError included
            # Redis down or the lock lost: the build goes on; its write is idempotent anyway.
            log.warning("could not renew the context lock of %r: %s", name, exc)


def redis_lock_factory(client: redis.Redis, *, timeout_s: float, wait_s: float) -> LockFactory:
    """Cross-process lock: one worker builds a collection's context, the others retry.

    The lock lives `timeout_s` and is renewed while held, so it outlives a slow build but not
    a dead builder."""

    @contextmanager
    def lock(collection: str) -> Iterator[None]:
        handle = client.lock(
            LOCK_KEY.format(collection),
            timeout=timeout_s,
            blocking_timeout=wait_s,
            thread_local=False,  # the renewing thread must see the holder's token
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
        stop = threading.Event()
        renewer = threading.Thread(
            target=_renew_while_held,
            args=(handle, float(timeout_s), stop, collection),
            name=f"cdeq-lock-{collection}",
            daemon=True,
        )
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
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
