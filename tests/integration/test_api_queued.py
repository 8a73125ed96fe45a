"""Queued mode over real Redis: the HTTP routes answer 202 + job ids, and one ingest path gives
the same outcome queued or in-process. Batches run in this process (no Celery worker here);
job records, counters and states go through the real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from app.api import create_app
from app.config import ApiSettings, QdrantSettings, RedisSettings, Settings
from app.ingest import (
    batch_failed,
    end_delivery,
    job_status,
    process_batch,
    start_delivery,
    submit,
)
from app.model import CdeEmbedder
from app.queue import INGEST_QUEUE
from app.service import Cdeq
from tests.helpers.builders import assert_error, corpus, documents, make_settings
from tests.helpers.faults import PoisonEmbedder
from tests.integration.conftest import flushed, redis_url

REDIS_URL = redis_url(15)


class RunHere:
    """A dispatcher that runs each queued batch at once, with the workers' failure policy."""

    def __init__(self) -> None:
        self.service: Cdeq | None = None

    def send_batch(self, job_id: str, index: int, request_id: str | None = None) -> None:
        assert self.service is not None
        batch = start_delivery(self.service, job_id, index, "here")
        assert batch is not None
        try:
            process_batch(self.service, batch)
        except Exception as exc:
            assert batch_failed(self.service, batch, exc, retries=10**6) is None
        end_delivery(self.service, batch, "here")


@pytest.fixture()
def clean_redis() -> Iterator[redis.Redis]:
    yield from flushed(15)


@pytest.fixture()
def queued(
    embedder: Any, tmp_path: Any, clean_redis: redis.Redis
) -> Iterator[tuple[TestClient, Cdeq]]:
    settings = Settings(
        qdrant=QdrantSettings(path=str(tmp_path / "q")),
        redis=RedisSettings(url=REDIS_URL),
        api=ApiSettings(),
    )
    here = RunHere()
    service = Cdeq(settings, embedder=embedder, dispatcher=here)
    here.service = service
    try:
        with TestClient(create_app(settings, service)) as c:
            yield c, service
    finally:
        service.close()


def test_queued_ingest_and_jobs(queued: tuple[TestClient, Cdeq]) -> None:
    c, service = queued
    r = c.post("/v1/collections/lakes/documents", json={"documents": corpus(40, "lake")})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert r.headers["location"] == f"/v1/jobs/{job_id}"
    status = c.get(f"/v1/jobs/{job_id}").json()
    assert status["state"] == "done" and status["succeeded"] == 40 and status["id"] == job_id
    assert_error(c.get("/v1/jobs/ffffffffffffffffffffffffffffffff"), 404)
    assert_error(c.get("/v1/jobs/..%2F..%2Fetc"), 404)
    assert_error(
        c.post("/v1/collections/lakes/documents", json={"documents": [{"id": 1}]}), 400, "documents"
    )
    r = c.post("/v1/collections/lakes/search", json={"text": "lake"})
    assert r.status_code == 200 and r.json()["results"]
    assert c.get("/readyz").json()["checks"]["redis"] == "ok"
    service.redis.rpush(INGEST_QUEUE, b"a", b"b", b"c")  # type: ignore[union-attr]
    assert "cdeq_ingest_queue_depth 3.0" in c.get("/metrics").text


@pytest.mark.parametrize("chunking", ["off", "auto"])
def test_one_ingest_path_same_outcome_queued_or_in_process(
    tiny_model_dir: Path,
    embedder: CdeEmbedder,
    tmp_path: Path,
    clean_redis: redis.Redis,
    chunking: str,
) -> None:
    """The same job with a failing batch and a long document, run both ways: truncated with
    chunking off, two chunks with it on."""
    docs = [{"id": "long", "text": "word " * 900}, *documents(95)]
    poison = PoisonEmbedder(embedder, poison=docs[40]["text"])
    outcomes = {}
    for mode, url in (("in-process", None), ("queued", REDIS_URL)):
        settings = make_settings(tiny_model_dir, tmp_path / mode, redis_url=url, chunking=chunking)
        here = RunHere()
        svc = Cdeq(settings, embedder=poison, dispatcher=here)  # type: ignore[arg-type]
        here.service = svc
        try:
            status = job_status(submit("same", docs, service=svc), service=svc)
            stored = svc.store.count("same")
        finally:
            svc.close()
        body = status.to_dict()
        for varying in ("id", "created_at", "updated_at"):
            body.pop(varying)
        outcomes[mode] = (body, stored)
    assert outcomes["queued"] == outcomes["in-process"]
    body, stored = outcomes["queued"]
    if chunking == "auto":  # 900 words: two chunks of the 501-token budget, nothing lost
        assert (body["truncated"], body["chunks"], stored, body["warnings"]) == (0, 65, 65, {})
    else:
        assert (body["truncated"], body["chunks"], stored) == (1, 64, 64)
        assert body["warnings"] == {"long": "truncated: only the first 512 tokens were embedded"}
    assert (body["state"], body["succeeded"], body["failed"]) == ("done_with_errors", 64, 32)


def test_a_finished_job_leaves_no_delivery_counts(
    queued: tuple[TestClient, Cdeq], clean_redis: redis.Redis
) -> None:
    """The last batch is recorded (which finishes the job and drops its working keys) before
    its delivery ends: ending it must not bring the delivery counts back."""
    c, _ = queued
    r = c.post("/v1/collections/ponds/documents", json={"documents": corpus(40, "pond")})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert c.get(f"/v1/jobs/{job_id}").json()["state"] == "done"
    left = sorted(k.decode() for k in clean_redis.scan_iter(f"*{job_id}*"))
    assert left and not [k for k in left if k.endswith((":deliveries", ":batches", ":context"))]


def test_scoped_keys_with_jobs_in_redis(
    embedder: Any, tmp_path: Any, clean_redis: redis.Redis
) -> None:
    """Jobs recorded in Redis keep their collection: another collection's job is a 404 like an
    unknown one; no key or hash lands in any Redis record."""
    import hashlib

    admin, reader = "admin-" + "a1" * 20, "reader-" + "b2" * 20
    keys: list[Any] = [
        {"name": "ops", "sha256": hashlib.sha256(admin.encode()).hexdigest(), "access": "admin"},
        {"name": "lakes-reader", "key": reader, "access": "read", "collections": ["lakes"]},
    ]
    settings = Settings(
        qdrant=QdrantSettings(path=str(tmp_path / "q")),
        redis=RedisSettings(url=REDIS_URL),
        api=ApiSettings.model_validate({"keys": keys}),
    )
    here = RunHere()
    service = Cdeq(settings, embedder=embedder, dispatcher=here)
    here.service = service
    try:
        with TestClient(create_app(settings, service)) as c:
            ops = {"Authorization": f"Bearer {admin}"}
            ro = {"Authorization": f"Bearer {reader}"}
            jobs = {}
            for name in ("lakes", "seas"):
                r = c.post(
                    f"/v1/collections/{name}/documents", json={"documents": corpus(8)}, headers=ops
                )
                assert r.status_code == 202, r.text
                jobs[name] = r.json()["job_id"]
            mine = c.get(f"/v1/jobs/{jobs['lakes']}", headers=ro)
            assert mine.status_code == 200 and mine.json()["collection"] == "lakes"
            hidden = assert_error(c.get(f"/v1/jobs/{jobs['seas']}", headers=ro), 404)
            unknown = assert_error(c.get("/v1/jobs/" + "f" * 32, headers=ro), 404)
            assert hidden["message"].replace(jobs["seas"], "X") == unknown["message"].replace(
                "f" * 32, "X"
            )
            assert c.get(f"/v1/jobs/{jobs['seas']}", headers=ops).status_code == 200
    finally:
        service.close()
    dump = []
    for key in clean_redis.scan_iter(count=1000):
        kind = clean_redis.type(key)
        dump.append(key)
        if kind == b"string":
            dump.append(clean_redis.get(key) or b"")
        elif kind == b"hash":
            for field, value in clean_redis.hgetall(key).items():
                dump += [field, value]
        elif kind == b"list":
            dump += clean_redis.lrange(key, 0, -1)
        elif kind in (b"set", b"zset"):
            dump += list(
                clean_redis.zrange(key, 0, -1) if kind == b"zset" else clean_redis.smembers(key)
            )
    text = b"\n".join(dump)
    assert len(dump) > 4  # the job records are there to be searched
    for secret in (admin, reader, hashlib.sha256(admin.encode()).hexdigest()):
        assert secret.encode() not in text
