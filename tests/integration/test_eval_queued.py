"""`evaluate` in queued mode: the same use case submits each condition's corpus to the Redis
queue, a real Celery worker embeds it, and the throw-away collections are dropped after."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery.contrib.testing.worker import start_worker

from app.evaluation import evaluate
from app.model import CdeEmbedder
from app.service import Cdeq
from tests.helpers.builders import ROOT, make_settings
from tests.integration.conftest import flushed, redis_url
from workers.celery_app import create_app, set_worker_service

REDIS_URL = redis_url(14)  # the pipeline tests' database: both flush it, neither runs beside


@pytest.fixture()
def clean_redis() -> Iterator[redis.Redis]:
    yield from flushed(14)


@pytest.fixture()
def worker(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, clean_redis: redis.Redis
) -> Iterator[Cdeq]:
    """A real Celery worker in a thread of this process, sharing the test's service (local
    Qdrant is single-process)."""
    svc = Cdeq(
        make_settings(tiny_model_dir, tmp_path / "qdrant", redis_url=REDIS_URL),
        embedder=embedder,
    )
    set_worker_service(svc)
    with start_worker(
        create_app(svc.settings), pool="solo", perform_ping_check=False, loglevel="WARNING"
    ):
        yield svc
    set_worker_service(None)
    svc.close()


def write_set(folder: Path, n: int = 36) -> Path:
    rows = [
        json.loads(line) for line in (ROOT / "examples" / "docs.jsonl").read_text().splitlines()
    ]
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"_id": r["id"], "title": "", "text": r["text"]}) + "\n" for r in rows[:n]
        )
    )
    (folder / "queries.jsonl").write_text(
        "".join(
            json.dumps({"_id": f"q{i}", "text": r["text"][:80]}) + "\n"
            for i, r in enumerate(rows[:n])
        )
    )
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"q{i}\t{r['id']}\t1\n" for i, r in enumerate(rows[:n]))
    )
    return folder


@pytest.mark.slow
def test_queued_evaluation_waits_for_the_workers_and_cleans_up(
    worker: Cdeq, tmp_path: Path
) -> None:
    assert worker.queued
    stages: list[tuple[str, int, int]] = []
    report = evaluate(
        write_set(tmp_path / "set"),
        contexts=["corpus", "generic"],
        service=worker,
        on_progress=lambda s, d, t: stages.append((s, d, t)),
    )
    assert [r.condition.name for r in report.results] == ["corpus/dense", "generic/dense"]
    assert all(r.documents_stored == 36 and r.documents_failed == 0 for r in report.results)
    assert all(len(r.run) == 36 and all(r.run.values()) for r in report.results)
    assert ("ingest corpus", 36, 36) in stages and ("ingest generic", 36, 36) in stages
    assert worker.store.list_collections() == []
