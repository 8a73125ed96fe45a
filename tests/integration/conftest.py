"""Integration tests need a Redis server; without one they skip with one clear reason."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

REDIS_HOST = os.environ.get("CDEQ_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("CDEQ_TEST_REDIS_PORT", "6379"))


def redis_url(db: int) -> str:
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


def _redis_answers() -> str | None:
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problem = _redis_answers()
    if problem is None:
        return
    skip = pytest.mark.skip(
        reason=f"integration tests need Redis on {REDIS_HOST}:{REDIS_PORT} ({problem}); "
        "start redis-server or set CDEQ_TEST_REDIS_HOST/PORT"
    )
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(skip)


def flushed(db: int) -> Iterator[redis.Redis]:
    """A client on test database ``db``, emptied before and after (only test databases)."""
    client = redis.Redis.from_url(redis_url(db))
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
