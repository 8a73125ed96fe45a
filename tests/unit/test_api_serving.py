"""The API over the model server (TestClient, the real tiny model, local Qdrant): 429 with
Retry-After when the queue is full (nothing lost), serving metrics, TEI's /embed and /info,
/v1/models/{id}, request ids (echoed, generated, in job records and JSON log lines)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api import create_app
from app.config import QdrantSettings, RedisSettings, ServeSettings, Settings
from app.logs import JsonFormatter, RequestIdFilter, request_id
from app.model import CdeEmbedder
from app.service import Cdeq
from app.serving import QUERY, ServedEmbedder
from tests.helpers.builders import assert_error, corpus, cosine
from tests.helpers.faults import GatedEmbedder


@pytest.fixture(scope="module")
def client(api_service: Cdeq) -> Iterator[TestClient]:
    with TestClient(create_app(api_service.settings, api_service)) as c:
        yield c


def test_models_retrieve_by_name(client: TestClient, api_service: Cdeq) -> None:
    r = client.get("/v1/models/cde-small-v1")
    assert r.status_code == 200 and r.json() == {
        "id": "cde-small-v1",
        "object": "model",
        "created": 0,
        "owned_by": "cdeq",
    }
    path = api_service.settings.model.name  # the configured checkpoint name works too
    assert client.get(f"/v1/models/{path}").json()["id"] == path
    assert_error(client.get("/v1/models/text-embedding-3-small"), 404, "model")


def test_tei_embed(client: TestClient, api_service: Cdeq, embedder: CdeEmbedder) -> None:
    generic = api_service.contexts.generic()
    one = client.post("/embed", json={"inputs": "where do rivers go?"})
    assert one.status_code == 200 and len(one.json()) == 1 and len(one.json()[0]) == embedder.dim
    want = embedder.embed_documents(["where do rivers go?"], generic).vectors
    assert cosine(np.array(one.json()), want)[0] >= 0.99999
    many = client.post(
        "/embed", json={"inputs": ["a query", "another"], "input_type": "query", "x": 1}
    )
    want = embedder.embed_queries(["a query", "another"], generic).vectors
    assert (cosine(np.array(many.json()), want) >= 0.99999).all()
    long = "word " * 600
    assert_error(client.post("/embed", json={"inputs": ["ok", long]}), 413, "inputs[1]")
    assert client.post("/embed", json={"inputs": long, "truncate": True}).status_code == 200
    assert_error(client.post("/embed", json={"inputs": "x", "normalize": False}), 400, "normalize")
    assert client.post("/embed", json={"inputs": "x", "normalize": True}).status_code == 200
    assert_error(client.post("/embed", json={"inputs": []}), 400, "inputs")
    assert_error(client.post("/embed", json={"inputs": ["ok", "  "]}), 400, "inputs[1]")
    assert_error(client.post("/embed", json={"inputs": [1, 2]}), 400, "inputs")
    assert_error(client.post("/embed", json={"inputs": "x", "collection": "nope"}), 404)


def test_tei_root_and_prompt_names(
    client: TestClient, api_service: Cdeq, embedder: CdeEmbedder
) -> None:
    """POST / is POST /embed (where huggingface_hub's InferenceClient posts); TEI's
    prompt_name chooses queries or documents, and an unknown one is refused by name."""
    generic = api_service.contexts.generic()
    text = "where do rivers go?"
    query = embedder.embed_queries([text], generic).vectors
    document = embedder.embed_documents([text], generic).vectors
    assert (
        client.post("/", json={"inputs": text}).json()
        == client.post("/embed", json={"inputs": text}).json()
    )
    for route in ("/", "/embed"):
        got = client.post(route, json={"inputs": [text], "prompt_name": "query"}).json()
        assert cosine(np.array(got), query)[0] >= 0.99999
        assert cosine(np.array(got), document)[0] < 0.99999  # the prompt name was not ignored
        for name in ("document", "passage"):
            got = client.post(route, json={"inputs": [text], "prompt_name": name}).json()
            assert cosine(np.array(got), document)[0] >= 0.99999
    err = assert_error(client.post("/", json={"inputs": text, "prompt_name": "qa"}), 400)
    assert err["param"] == "prompt_name"
    assert "'query', 'document', 'passage'" in err["message"] and "'qa'" in err["message"]
    both = {"inputs": text, "prompt_name": "query", "input_type": "document"}
    assert_error(client.post("/embed", json=both), 400, "prompt_name")
    agree = {"inputs": text, "prompt_name": "query", "input_type": "query"}
    assert cosine(np.array(client.post("/embed", json=agree).json()), query)[0] >= 0.99999


def test_tei_health(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.content == b""


def test_tei_info(client: TestClient, embedder: CdeEmbedder) -> None:
    info = client.get("/info").json()
    assert info["model_id"] == "cde-small-v1" and info["model_dtype"] == "float32"
    assert (
        info["device"] == str(embedder.device)
        and info["max_input_length"] == embedder.max_seq_length
    )
    assert info["token_budget"] == embedder.token_budget and info["dim"] == embedder.dim
    assert info["batching"] is True and info["version"]


def test_request_ids(client: TestClient, api_service: Cdeq) -> None:
    r = client.post("/embed", json={"inputs": "x"}, headers={"X-Request-ID": "trace-42.a"})
    assert r.headers["x-request-id"] == "trace-42.a"
    made = client.get("/healthz").headers["x-request-id"]
    assert len(made) == 32 and int(made, 16) >= 0
    # an id that is unsafe to log (spaces, too long) is replaced by a new one
    for bad in ("has spaces", "x" * 200):
        got = client.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert got != bad and len(got) == 32
    # errors carry it too, and the jobs a request creates record it
    assert client.get("/v1/nope", headers={"X-Request-ID": "e-1"}).headers["x-request-id"] == "e-1"
    r = client.post(
        "/v1/collections/traced/documents",
        json={"documents": corpus(3)},
        headers={"X-Request-ID": "ingest-7"},
    )
    assert r.status_code == 200 and r.json()["request_id"] == "ingest-7"
    assert client.get(f"/v1/jobs/{r.json()['id']}").json()["request_id"] == "ingest-7"


def test_json_log_lines_carry_the_request_id() -> None:
    handler_filter, formatter = RequestIdFilter(), JsonFormatter()
    token = request_id.set("req-9")
    try:
        record = logging.LogRecord(
            "cdeq.test", logging.INFO, __file__, 1, "hello %s", ("you",), None
        )
        handler_filter.filter(record)
    finally:
        request_id.reset(token)
    line = json.loads(formatter.format(record))
    assert line["request_id"] == "req-9" and line["message"] == "hello you"
    assert line["level"] == "INFO" and line["logger"] == "cdeq.test" and line["time"].endswith("Z")


def test_full_queue_is_429_with_retry_after_and_nothing_is_lost(
    embedder: CdeEmbedder, tmp_path: Path
) -> None:
    gated = GatedEmbedder(embedder)
    texts = ["first question", "second question"]
    room = sum(ServedEmbedder(embedder, ServeSettings()).costs(texts, QUERY))  # exactly these
    settings = Settings(
        qdrant=QdrantSettings(path=str(tmp_path / "q")),
        redis=RedisSettings(url=None),
        serve=ServeSettings(max_wait_ms=0, max_queue_tokens=room),
    )
    service = Cdeq(settings, embedder=gated)  # type: ignore[arg-type]
    answers: list[Any] = []
    try:
        with TestClient(create_app(settings, service)) as c:
            held = threading.Thread(
                target=lambda: answers.append(
                    c.post("/v1/embeddings", json={"input": texts, "input_type": "query"})
                )
            )
            held.start()
            assert gated.entered.wait(30)  # its forward is running (held): the queue is full
            for route, body in (
                ("/v1/embeddings", {"input": "one more"}),
                ("/embed", {"inputs": "one more"}),
                ("/v1/collections/x/documents", {"documents": corpus(2)}),
            ):
                r = c.post(route, json=body)
                err = assert_error(r, 429)
                assert err["code"] == "overloaded" and int(r.headers["retry-after"]) >= 1
            gated.gate.set()
            held.join(30)
            assert answers[0].status_code == 200
            got = np.array([d["embedding"] for d in answers[0].json()["data"]])
            want = embedder.embed_queries(texts, service.contexts.generic()).vectors
            assert (cosine(got, want) >= 0.99999).all()
            assert c.post("/v1/embeddings", json={"input": "one more"}).status_code == 200
            metrics = c.get("/metrics").text
            assert "cdeq_serve_rejected_total 3.0" in metrics
            for name in (
                "cdeq_serve_batch_size_bucket",
                "cdeq_serve_queue_seconds_bucket",
                "cdeq_serve_forward_seconds_bucket",
                "cdeq_serve_queue_tokens 0.0",
                "cdeq_serve_queue_depth 0.0",
                "cdeq_serve_cache_hit_ratio",
                'cdeq_serve_cache_lookups_total{result="miss"}',
            ):
                assert name in metrics, name
    finally:
        gated.gate.set()
        service.close()
