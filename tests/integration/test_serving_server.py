"""A real `cdeq serve` with JSON logs, driven as users would: the LangChain adapter (queries as
queries against a collection's context), `client.models.retrieve`, clients that hang up
mid-request, and request ids in the JSON log lines."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from app.ingest import ingest_documents
from app.model import CdeEmbedder
from app.service import Cdeq
from tests.helpers.builders import Server, corpus, cosine, serve_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serving-server")
    env = {"CDEQ_QDRANT__PATH": str(tmp / "qdrant"), "CDEQ_LOG__FORMAT": "json"}
    with serve_process(tiny_model_dir, tmp, env) as srv:
        docs = corpus(40, "tide")
        r = httpx.post(
            f"{srv.url}/v1/collections/tides/documents", json={"documents": docs}, timeout=120
        )
        assert r.status_code == 200, r.text
        yield srv


@pytest.fixture(scope="module")
def tides(api_service: Cdeq) -> np.ndarray:
    """The same documents ingested in this process give the same (deterministic) context."""
    ingest_documents("tides", corpus(40, "tide"), service=api_service)
    return api_service.contexts.current("tides").dataset_embeddings


def test_langchain_embeddings_use_input_type_and_collection(
    server: Server, tides: np.ndarray, embedder: CdeEmbedder
) -> None:
    pytest.importorskip("langchain_core")
    from cdeq_client.langchain import CdeqEmbeddings

    lc = CdeqEmbeddings(server.url, collection="tides", batch_size=2)
    query = lc.embed_query("when is high tide?")
    want = embedder.embed_queries(["when is high tide?"], tides).vectors[0]
    assert cosine(np.array(query), want) >= 0.99999
    as_document = embedder.embed_documents(["when is high tide?"], tides).vectors[0]
    assert cosine(np.array(query), as_document) < 0.99999  # the input type matters
    texts = ["the moon pulls the sea", "ebb and flow", "harbours and boats"]
    docs = np.array(lc.embed_documents(texts))  # two requests (batch_size=2)
    assert (cosine(docs, embedder.embed_documents(texts, tides).vectors) >= 0.99999).all()


def test_openai_models_retrieve(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
    assert client.models.retrieve("cde-small-v1").id == "cde-small-v1"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("text-embedding-3-small")


def test_clients_that_hang_up_do_not_spoil_the_others(
    server: Server, tides: np.ndarray, embedder: CdeEmbedder
) -> None:
    long = [f"tide table {i} " + "moon sea harbour " * 120 for i in range(16)]
    results: dict[int, list[list[float]]] = {}

    def impatient() -> None:
        # gives up long before the answer: the server computes or skips it, and drops it
        with contextlib.suppress(httpx.TimeoutException):
            httpx.post(
                f"{server.url}/embed",
                json={"inputs": long, "truncate": True, "collection": "tides"},
                timeout=0.01,
            )

    def patient(i: int) -> None:
        body = {
            "inputs": [f"question {i} about tides"],
            "input_type": "query",
            "collection": "tides",
        }
        results[i] = httpx.post(f"{server.url}/embed", json=body, timeout=120).json()

    threads = [threading.Thread(target=impatient) for _ in range(6)]
    threads += [threading.Thread(target=patient, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i in range(6):
        want = embedder.embed_queries([f"question {i} about tides"], tides).vectors[0]
        assert cosine(np.array(results[i][0]), want) >= 0.99999
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_request_ids_in_json_logs(server: Server) -> None:
    r = httpx.post(
        f"{server.url}/v1/embeddings",
        json={"input": "logged"},
        headers={"X-Request-ID": "rid-json-1"},
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "rid-json-1"
    ingest = httpx.post(
        f"{server.url}/v1/collections/logged/documents",
        json={"documents": corpus(3)},
        headers={"X-Request-ID": "rid-json-2"},
        timeout=60,
    )
    assert ingest.json()["request_id"] == "rid-json-2"
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    assert lines and all(
        {"time", "level", "logger", "message", "request_id"} <= set(x) for x in lines
    )
    access = [x for x in lines if x["request_id"] == "rid-json-1"]
    assert any("POST /v1/embeddings" in x["message"] for x in access), access
