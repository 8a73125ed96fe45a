"""Every benchmark script runs end to end with `--dry-run` (the tiny model, a few documents):
what the docs print must run from a clone. Numbers are not checked, only that each script
finishes and prints its table."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from tests.helpers.builders import ROOT
from tests.integration.conftest import flushed, redis_url

pytestmark = pytest.mark.slow

BENCH_DB = 12  # a test database (12 to 15): emptied before and after


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDEQ_")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture()
def empty_db() -> Iterator[redis.Redis]:
    yield from flushed(BENCH_DB)


@pytest.mark.parametrize(
    ("script", "table"),
    [
        ("bench/embed.py", "| v1 | float32 | cdeq `embed_documents` |"),
        ("bench/rebuild.py", "| rebuild (stage 1 + re-embed + catch-up + swap) |"),
        ("bench/serve.py", "| batched |"),
        ("bench/long_documents.py", "chunks/s ratio (auto/off)"),
        ("bench/hybrid.py", "| points | mode | store median ms |"),
    ],
)
def test_bench_dry_run(script: str, table: str) -> None:
    run = bench(script, "--dry-run")
    assert run.returncode == 0, run.stdout + run.stderr
    assert table in run.stdout, run.stdout


def test_ingest_bench_dry_run(empty_db: redis.Redis) -> None:
    run = bench("bench/ingest.py", "--redis-url", redis_url(BENCH_DB), "--dry-run")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "| pipeline: Redis → worker → Qdrant |" in run.stdout
    assert "documents stored: 40/40" in run.stdout
    assert empty_db.dbsize() == 0  # it deleted the keys it made
