"""The HTTP API as a real process (`cdeq serve`), driven by the official `openai` client and by
plain HTTP: vectors equal the library's, auth, bad input over the wire, overload, and no key
ever in the server's output."""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from app.ingest import ingest_documents
from app.model import CdeEmbedder
from app.service import Cdeq
from tests.helpers.builders import Server, corpus, cosine, serve_process

pytestmark = pytest.mark.slow

# Distinctive keys, so that finding them in the server's output means a leak.
RW = f"k-rw-{secrets.token_hex(12)}"
RO = f"k-ro-{secrets.token_hex(12)}"
WRONG = f"k-wrong-{secrets.token_hex(12)}"
# Room in the model server's queue for about two of the overload test's requests (32 texts
# of ~512 tokens, each carrying the tiny model's 24-token prefix).
MAX_QUEUE_TOKENS = 2 * 32 * (24 + 512)
TEXTS = [
    "What do rivers carry to the sea?",
    "Mountains rise above the valley.",
    "search_document: a prefixed one",
]


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "CDEQ_QDRANT__PATH": str(tmp_path_factory.mktemp("api-server") / "qdrant"),
        "CDEQ_API__KEYS": f'["{RW}"]',
        "CDEQ_API__READ_ONLY_KEYS": f'["{RO}"]',
        "CDEQ_SERVE__MAX_QUEUE_TOKENS": str(MAX_QUEUE_TOKENS),
        "CDEQ_LOG_LEVEL": "DEBUG",  # the most the server would ever write, and still no key
    }
    with serve_process(tiny_model_dir, tmp_path_factory.mktemp("api-server-log"), env) as srv:
        yield srv


@pytest.fixture(scope="module")
def generic(api_service: Cdeq) -> Cdeq:
    """A reference service in this process (its own Qdrant folder) over the same checkpoint."""
    return api_service


def oai(server: Server, key: str = RW) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=30)


def test_openai_client_generic_context(
    server: Server, generic: Cdeq, embedder: CdeEmbedder
) -> None:
    client = oai(server, RO)  # embeddings are a read route
    floats = client.embeddings.create(
        model="cde-small-v1",
        input=TEXTS,
        encoding_format="float",
        extra_body={"input_type": "query"},
    )
    packed = client.embeddings.create(
        model="cde-small-v1",
        input=TEXTS,
        encoding_format="base64",
        extra_body={"input_type": "query"},
    )
    default = client.embeddings.create(
        model="cde-small-v1", input=TEXTS, extra_body={"input_type": "query"}
    )
    context = generic.contexts.generic()
    queries = embedder.embed_queries(TEXTS[:2], context)
    document = embedder.embed_documents(["a prefixed one"], context)  # its own prefix wins
    want = np.concatenate([queries.vectors, document.vectors])
    got = np.array([d.embedding for d in floats.data])
    assert got.shape == (3, embedder.dim)
    assert (cosine(got, want) >= 0.99999).all()
    # Asked for base64, the client hands the string over; by default it asks for base64 itself
    # and decodes it: both are the little-endian float32 bytes of the same vectors.
    unpacked = [np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in packed.data]  # type: ignore[arg-type]
    np.testing.assert_array_equal(np.array(unpacked), got.astype(np.float32))
    np.testing.assert_array_equal(
        np.array([d.embedding for d in default.data], dtype=np.float32), got.astype(np.float32)
    )
    tokens = sum(queries.token_counts) + sum(document.token_counts)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == tokens
    assert floats.model == "cde-small-v1" and [d.index for d in floats.data] == [0, 1, 2]
    raw = httpx.post(
        f"{server.url}/v1/embeddings",
        json={"input": TEXTS[:1], "encoding_format": "base64", "input_type": "query"},
        headers={"Authorization": f"Bearer {RO}"},
    ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert cosine(decoded, got[0]) >= 0.99999  # a batch of one: padding differs, so not bit-equal


def test_openai_client_collection_context(
    server: Server, generic: Cdeq, embedder: CdeEmbedder
) -> None:
    docs = corpus(40, "harbour")
    r = httpx.post(
        f"{server.url}/v1/collections/harbours/documents",
        json={"documents": docs},
        headers={"Authorization": f"Bearer {RW}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text  # in-process mode: finished at once
    assert r.json()["state"] == "done"
    got = oai(server).embeddings.create(
        model="cde-small-v1",
        input=TEXTS[:2],
        extra_body={"collection": "harbours", "input_type": "query"},
    )
    # The same documents ingested here give the same (deterministic) context.
    ingest_documents("harbours", docs, service=generic)
    context = generic.contexts.current("harbours")
    assert context.source == "corpus"
    want = embedder.embed_queries(TEXTS[:2], context.dataset_embeddings).vectors
    assert (cosine(np.array([d.embedding for d in got.data]), want) >= 0.99999).all()
    with pytest.raises(openai.NotFoundError):
        oai(server).embeddings.create(
            model="cde-small-v1", input="x", extra_body={"collection": "no-such"}
        )


def test_auth_over_http(server: Server) -> None:
    with pytest.raises(openai.AuthenticationError):
        oai(server, WRONG).embeddings.create(model="cde-small-v1", input="hello")
    r = httpx.post(f"{server.url}/v1/embeddings", json={"input": "hello"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(
        f"{server.url}/v1/collections/harbours/documents",
        json={"documents": corpus(1, "harbour")},
        headers={"Authorization": f"Bearer {RO}"},
    )
    assert r.status_code == 403
    r = httpx.request(
        "DELETE",
        f"{server.url}/v1/collections/harbours/documents",
        json={"ids": ["d1"]},
        headers={"Authorization": f"Bearer {RO}"},
    )
    assert r.status_code == 403
    for route in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{server.url}{route}").status_code == 200
    assert f"cdeq serving on {server.url}" in server.output()  # where to point a client


def test_bad_input_over_the_wire(server: Server) -> None:
    headers = {"Authorization": f"Bearer {RW}", "Content-Type": "application/json"}
    cases = [
        b'{"input": "caf\xe9 \xff"}',  # not UTF-8
        b'{"input": "\\ud800"}',  # lone surrogate
        b'{"input": ["ok", 5]}',
        b'{"input": []}',
        b'{"input": ""}',
        b'{"input": [1, 2, 3]}',
        b"{not json",
    ]
    for body in cases:
        r = httpx.post(f"{server.url}/v1/embeddings", content=body, headers=headers)
        assert r.status_code == 400, (body, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.post(f"{server.url}/v1/embeddings", json={"input": ["x"] * 3000}, headers=headers)
    assert r.status_code == 413
    with pytest.raises(openai.BadRequestError):
        oai(server).embeddings.create(model="cde-small-v1", input=[[1, 2, 3]])
    # 10 MB: refused from Content-Length alone (the server may close before reading it all)
    try:
        r = httpx.post(
            f"{server.url}/v1/embeddings", content=b" " * 10_000_000, headers=headers, timeout=30
        )
        assert r.status_code == 413
    except httpx.TransportError:
        pass  # the connection was closed on the unread body: still no 5xx, and see below
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_overload_gives_429_and_the_server_recovers(server: Server) -> None:
    long_texts = [
        f"passage {i} " + "tide harbour ship anchor " * 160 for i in range(32)
    ]  # ~512 tokens each
    n = 20
    barrier = threading.Barrier(n)
    results: list[tuple[int, dict[str, str], Any]] = [(0, {}, None)] * n

    def fire(i: int) -> None:
        with httpx.Client(timeout=120) as http:
            barrier.wait()
            r = http.post(
                f"{server.url}/v1/embeddings",
                json={"input": long_texts},
                headers={"Authorization": f"Bearer {RW}"},
            )
            results[i] = (r.status_code, dict(r.headers), r.json())

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    # the event loop stays free while the model is busy: a probe is answered meanwhile
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    for t in threads:
        t.join(timeout=120)
    statuses = [status for status, _, _ in results]
    assert all(s in (200, 429) for s in statuses), statuses
    assert statuses.count(429) >= 1 and statuses.count(200) >= 1, statuses
    for status, headers, body in results:
        if status == 429:
            assert int(headers["retry-after"]) >= 1 and body["error"]["code"] == "overloaded"
        else:
            assert len(body["data"]) == 32 and all(d.get("truncated") for d in body["data"])
    after = oai(server).embeddings.create(model="cde-small-v1", input="still here?")
    assert len(after.data) == 1
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'route="/v1/embeddings",status="429"' in metrics


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_rss_settles_after_a_request_flood(server: Server) -> None:
    """500 requests (embeddings of varied sizes, searches, errors) from 8 threads: the server's
    resident memory ends within 20% of its level after a warm-up of the same mix."""
    if not Path(f"/proc/{server.process.pid}/status").exists():
        pytest.skip("needs /proc to read the server's RSS")
    headers = {"Authorization": f"Bearer {RW}"}

    def one(i: int, http: httpx.Client) -> None:
        kind = i % 4
        if kind == 0:
            body: dict[str, Any] = {"input": [f"text {i} " + "word " * (i % 200)] * (1 + i % 16)}
            http.post(f"{server.url}/v1/embeddings", json=body, headers=headers)
        elif kind == 1:
            http.post(f"{server.url}/v1/embeddings", json={"input": f"q {i}"}, headers=headers)
        elif kind == 2:
            http.post(f"{server.url}/v1/embeddings", json={"input": []}, headers=headers)
        else:
            http.get(f"{server.url}/v1/collections?api_key={WRONG}", headers=headers)

    def flood(n: int) -> None:
        def worker(start: int) -> None:
            with httpx.Client(timeout=120) as http:
                for i in range(start, n, 8):
                    one(i, http)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    flood(100)
    warm = rss_bytes(server.process.pid)
    flood(500)
    time.sleep(1)
    after = rss_bytes(server.process.pid)
    print(f"server RSS: {warm / 2**20:.0f} MiB after warm-up, {after / 2**20:.0f} MiB after 500")
    assert after <= 1.2 * warm, (warm, after)


def test_security_headers_over_the_wire(server: Server) -> None:
    for r in (
        httpx.get(f"{server.url}/healthz"),
        httpx.post(f"{server.url}/v1/embeddings", json={"input": "x"}),  # 401
    ):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"


def test_keys_never_in_server_output(server: Server) -> None:
    """Last in the module: every request above (good, wrong and read-only keys) has been logged."""
    oai(server).embeddings.create(model="cde-small-v1", input="one more")
    httpx.get(f"{server.url}/v1/collections", headers={"Authorization": f"Bearer {WRONG}"})
    httpx.get(f"{server.url}/v1/collections", headers={"Authorization": f"Bearer {RO}"})
    httpx.get(f"{server.url}/v1/models?api_key={WRONG}&x=1")  # a key in the query string
    output = server.output()
    assert "POST /v1/embeddings" in output  # the access log is there…
    assert '"GET /v1/models HTTP/1.1" 401' in output  # …with the path, without its query
    assert "api_key" not in output
    for key in (RW, RO, WRONG):
        assert key not in output  # …but never a key
