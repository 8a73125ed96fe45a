"""HTTP API in-process (TestClient) over real parts: the tiny model and a local Qdrant folder.
The queued routes (with Redis) are in tests/integration/test_api_queued.py."""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.api import create_app
from app.config import ApiSettings, QdrantSettings, RedisSettings, Settings
from app.errors import InvalidInput
from app.service import Cdeq
from tests.helpers.builders import assert_error, corpus, cosine

RW, RO = "test-rw-key-1b7e0c", "test-ro-key-94d2aa"
TEXTS = [
    "Contextual document embeddings condition on neighbouring documents.",
    "The cat sat on the mat and looked at the garden.",
    "Qdrant stores vectors with payloads.",
]


def with_api(service: Cdeq, **api: Any) -> Settings:
    """The service's settings with other API settings (the service itself is shared)."""
    settings = service.settings.model_copy(deep=True)
    settings.api = ApiSettings(**api)
    return settings


@pytest.fixture(scope="module")
def client(api_service: Cdeq) -> Iterator[TestClient]:
    """An open app (loopback, no keys) over the module's in-process service."""
    with TestClient(create_app(api_service.settings, api_service)) as c:
        yield c


@pytest.fixture(scope="module")
def keyed(api_service: Cdeq) -> Iterator[TestClient]:
    """An app that requires keys: one read-write, one read-only."""
    settings = with_api(api_service, keys=[SecretStr(RW)], read_only_keys=[SecretStr(RO)])
    with TestClient(create_app(settings, api_service)) as c:
        yield c


@pytest.fixture(scope="module")
def ingested(client: TestClient) -> str:
    """A collection with its own context (40 distinct documents ≥ min_context_documents)."""
    r = client.post("/v1/collections/rivers/documents", json={"documents": corpus()})
    assert r.status_code == 200, r.text  # in-process mode: the finished job, at once
    status = r.json()
    assert (
        status["state"] == "done" and status["succeeded"] == 40 and status["collection"] == "rivers"
    )
    return "rivers"


# ---- /v1/embeddings: the vectors are the library's ---------------------------------------------
def test_embeddings_equal_library_generic_context(client: TestClient, api_service: Cdeq) -> None:
    generic = api_service.contexts.generic()
    for input_type, run in (
        ("query", api_service.embedder.embed_queries),
        ("document", api_service.embedder.embed_documents),
    ):
        r = client.post(
            "/v1/embeddings",
            json={"input": TEXTS, "model": "cde-small-v1", "input_type": input_type},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "list" and body["model"] == "cde-small-v1"
        assert [d["index"] for d in body["data"]] == [0, 1, 2]
        assert all(d["object"] == "embedding" and "truncated" not in d for d in body["data"])
        got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
        want = run(TEXTS, generic)
        assert got.shape == (3, api_service.embedder.dim)
        assert (cosine(got, want.vectors) >= 0.99999).all()
        assert body["usage"] == {
            "prompt_tokens": sum(want.token_counts),
            "total_tokens": sum(want.token_counts),
        }


def test_default_is_document_and_prefixes_choose_for_themselves(
    client: TestClient, api_service: Cdeq
) -> None:
    generic = api_service.contexts.generic()
    embedder = api_service.embedder
    inputs = ["search_query: " + TEXTS[0], TEXTS[1], "search_document: " + TEXTS[2]]
    r = client.post("/v1/embeddings", json={"input": inputs, "input_type": "query"})
    got = np.array([d["embedding"] for d in r.json()["data"]])
    q = embedder.embed_queries([TEXTS[0], TEXTS[1]], generic)
    d = embedder.embed_documents([TEXTS[2]], generic)
    assert (cosine(got, np.stack([q.vectors[0], q.vectors[1], d.vectors[0]])) >= 0.99999).all()
    assert r.json()["usage"]["total_tokens"] == sum(q.token_counts) + sum(d.token_counts)
    # No input_type: document, and a single string is one input.
    r = client.post("/v1/embeddings", json={"input": TEXTS[1]})
    got1 = np.array(r.json()["data"][0]["embedding"])
    assert cosine(got1, embedder.embed_documents([TEXTS[1]], generic).vectors[0]) >= 0.99999


def test_base64_is_little_endian_float32_of_the_same_vectors(client: TestClient) -> None:
    floats = client.post("/v1/embeddings", json={"input": TEXTS, "encoding_format": "float"}).json()
    packed = client.post(
        "/v1/embeddings", json={"input": TEXTS, "encoding_format": "base64"}
    ).json()
    for f, p in zip(floats["data"], packed["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(p["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(decoded, np.array(f["embedding"], dtype=np.float32))
    assert floats["usage"] == packed["usage"]


def test_collection_context(client: TestClient, api_service: Cdeq, ingested: str) -> None:
    context = api_service.contexts.current(ingested)
    assert context.source == "corpus"
    r = client.post(
        "/v1/embeddings", json={"input": TEXTS, "collection": ingested, "input_type": "query"}
    )
    got = np.array([d["embedding"] for d in r.json()["data"]])
    want = api_service.embedder.embed_queries(TEXTS, context.dataset_embeddings).vectors
    assert (cosine(got, want) >= 0.99999).all()
    generic = api_service.embedder.embed_queries(TEXTS, api_service.contexts.generic()).vectors
    assert not np.allclose(got, generic, atol=1e-4)  # the collection's context made a difference


def test_dimensions_model_and_user(client: TestClient, api_service: Cdeq) -> None:
    dim = api_service.embedder.dim
    assert (
        client.post(
            "/v1/embeddings", json={"input": "x y", "dimensions": dim, "user": "u1"}
        ).status_code
        == 200
    )
    assert_error(
        client.post(
            "/v1/embeddings", json={"input": "x y", "dimensions": 768 if dim != 768 else 256}
        ),
        400,
        "dimensions",
    )
    err = assert_error(
        client.post("/v1/embeddings", json={"input": "x", "model": "text-embedding-3-small"}),
        404,
        "model",
    )
    assert err["code"] == "model_not_found"
    models = client.get("/v1/models").json()
    assert models["data"][0]["id"] == "cde-small-v1"


def test_truncation_flag(client: TestClient, api_service: Cdeq) -> None:
    long = "word " * 2000
    r = client.post("/v1/embeddings", json={"input": ["short text", long]})
    assert r.status_code == 200
    data = r.json()["data"]
    assert "truncated" not in data[0] and data[1]["truncated"] is True
    limit = api_service.embedder.max_seq_length
    assert (
        r.json()["usage"]["total_tokens"]
        == limit
        + api_service.embedder.embed_documents(
            ["short text"], api_service.contexts.generic()
        ).token_counts[0]
    )
    err = assert_error(
        client.post("/v1/embeddings", json={"input": ["short text", long], "truncate": False}),
        413,
        "input[1]",
    )
    assert err["code"] == "input_too_long"
    assert (
        client.post("/v1/embeddings", json={"input": ["short text"], "truncate": False}).status_code
        == 200
    )


# ---- bad input: documented 4xx, never 5xx ------------------------------------------------------
BAD_EMBEDDINGS: list[tuple[str, bytes, int, str | None]] = [
    ("empty list", b'{"input": []}', 400, "input"),
    ("empty string", b'{"input": ""}', 400, "input[0]"),
    ("whitespace", b'{"input": ["ok", "  "]}', 400, "input[1]"),
    ("prefix only", b'{"input": "search_query: "}', 400, "input[0]"),
    ("token array", b'{"input": [1, 2, 3]}', 400, "input"),
    ("token arrays", b'{"input": [[1, 2], [3]]}', 400, "input[0]"),
    ("number input", b'{"input": 5}', 400, "input"),
    ("object input", b'{"input": {"a": 1}}', 400, "input"),
    ("null item", b'{"input": ["a", null]}', 400, "input[1]"),
    ("missing input", b'{"model": "cde-small-v1"}', 400, "input"),
    ("lone surrogate", b'{"input": "\\ud800"}', 400, "input"),
    ("lone surrogate in list", b'{"input": ["ok", "a\\udfffb"]}', 400, "input[1]"),
    ("surrogate in a key", b'{"input": "ok", "\\ud800": 1}', 400, None),
    ("non-UTF-8 bytes", b'{"input": "caf\xe9"}', 400, None),
    ("invalid JSON", b'{"input": ', 400, None),
    ("NaN", b'{"input": "x", "dimensions": NaN}', 400, None),
    ("huge number", b'{"input": "x", "dimensions": 1e999}', 400, None),
    ("not an object", b'["x"]', 400, None),
    ("empty body", b"", 400, None),
    ("deep nesting", b'{"input": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400, None),
    ("bad encoding_format", b'{"input": "x", "encoding_format": "int8"}', 400, "encoding_format"),
    ("bad input_type", b'{"input": "x", "input_type": "passage"}', 400, "input_type"),
    ("truncate as string", b'{"input": "x", "truncate": "no"}', 400, "truncate"),
    ("dimensions as string", b'{"input": "x", "dimensions": "64"}', 400, "dimensions"),
    ("collection as number", b'{"input": "x", "collection": 3}', 400, "collection"),
    ("hostile collection", b'{"input": "x", "collection": "../etc"}', 400, "collection"),
    ("long collection", b'{"input": "x", "collection": "' + b"a" * 300 + b'"}', 400, "collection"),
    ("unknown collection", b'{"input": "x", "collection": "no-such-collection"}', 404, None),
]


@pytest.mark.parametrize(
    ("body", "status", "param"), [c[1:] for c in BAD_EMBEDDINGS], ids=[c[0] for c in BAD_EMBEDDINGS]
)
def test_bad_embedding_requests(
    client: TestClient, body: bytes, status: int, param: str | None
) -> None:
    r = client.post("/v1/embeddings", content=body, headers={"Content-Type": "application/json"})
    assert_error(r, status, param)


def test_content_type_must_be_json(client: TestClient) -> None:
    for headers in (
        {},
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
    ):
        assert_error(client.post("/v1/embeddings", content=b'{"input": "x"}', headers=headers), 415)
    ok = client.post(
        "/v1/embeddings",
        content=b'{"input": "x"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200


def test_too_many_inputs_is_413(client: TestClient) -> None:
    err = assert_error(client.post("/v1/embeddings", json={"input": ["a"] * 3000}), 413, "input")
    assert err["code"] == "too_many_inputs" and "2048" in err["message"]


def test_body_over_the_limit_is_413(client: TestClient) -> None:
    big = json.dumps({"input": ["x" * 1000] * 10_000}).encode()  # ~10 MB, over the 8 MiB default
    assert len(big) > 10_000_000
    assert_error(
        client.post("/v1/embeddings", content=big, headers={"Content-Type": "application/json"}),
        413,
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: the bytes are counted while read
        for _ in range(10):
            yield b" " * 1_000_000

    assert_error(
        client.post(
            "/v1/embeddings", content=chunks(), headers={"Content-Type": "application/json"}
        ),
        413,
    )


def test_small_body_limit_counts_bytes(api_service: Cdeq) -> None:
    settings = with_api(api_service, max_body_bytes=2048)
    with TestClient(create_app(settings, api_service)) as c:
        assert c.post("/v1/embeddings", json={"input": "short"}).status_code == 200
        assert_error(c.post("/v1/embeddings", json={"input": "x" * 3000}), 413)


HOSTILE = [
    "..",
    "a%2Fb",
    "a/b",
    "%2e%2e",
    "A" * 300,
    "UPPER",
    "x y",
    "-lead",
    "cdeq_meta",
    "name__c1",
    "%00",
    "%ff",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_collection_names_are_4xx(client: TestClient, name: str) -> None:
    for method, route, body in (
        ("POST", "search", {"text": "hello"}),
        ("POST", "documents", {"documents": corpus(2)}),
        ("DELETE", "documents", {"ids": ["d1"]}),
    ):
        r = client.request(method, f"/v1/collections/{name}/{route}", json=body)
        assert 400 <= r.status_code < 500, (method, route, r.status_code, r.text)
        assert_error(r, r.status_code)


def test_wrong_types_on_collection_routes(client: TestClient, ingested: str) -> None:
    base = f"/v1/collections/{ingested}"
    assert_error(client.post(f"{base}/search", json={"text": 5}), 400, "text")
    assert_error(client.post(f"{base}/search", json={"text": "x", "top_k": "3"}), 400, "top_k")
    assert_error(client.post(f"{base}/search", json={"text": "x", "top_k": 0}), 400, "top_k")
    assert_error(client.post(f"{base}/search", json={"text": "x", "filter": [1]}), 400, "filter")
    assert_error(
        client.post(f"{base}/search", json={"text": "x", "filter": {"metadata.n": {"gt": 1}}}),
        400,
        "filter",
    )
    assert_error(client.post(f"{base}/search", json={"text": "x", "extra": 1}), 400, "extra")
    assert_error(client.post(f"{base}/search", json={}), 400, "text")
    assert_error(client.post(f"{base}/documents", json={"documents": "nope"}), 400, "documents")
    assert_error(client.post(f"{base}/documents", json={"documents": []}), 400, "documents")
    err = assert_error(
        client.post(f"{base}/documents", json={"documents": [{"id": "a"}, {"text": "b"}]}),
        400,
        "documents",
    )
    assert "documents[0].text" in err["message"] and "documents[1].id" in err["message"]
    assert_error(client.request("DELETE", f"{base}/documents", json={"ids": "d1"}), 400, "ids")
    assert_error(client.request("DELETE", f"{base}/documents", json={"ids": [True]}), 400, "ids[0]")
    assert_error(
        client.request("DELETE", f"{base}/documents", json={"ids": [{"a": 1}]}), 400, "ids[0]"
    )


def test_not_found_and_method_not_allowed(client: TestClient) -> None:
    assert_error(client.get("/v1/nothing-here"), 404)
    assert_error(client.post("/v1/collections/ghost/search", json={"text": "hi"}), 404)
    assert_error(
        client.request("DELETE", "/v1/collections/ghost/documents", json={"ids": ["a"]}), 404
    )
    err = assert_error(client.get("/v1/jobs/0123abcd"), 404)  # in-process records: none by that id
    assert "job '0123abcd' not found" in err["message"]
    r = client.get("/v1/embeddings")
    assert_error(r, 405)
    assert "POST" in r.headers["allow"]


# ---- collections, search, delete (in-process mode) ------------------------------------------------
def test_search_list_delete(client: TestClient, ingested: str) -> None:
    r = client.post(
        f"/v1/collections/{ingested}/search",
        json={"text": "document 3 about the river", "top_k": 5},
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 5 and {"id", "score", "payload"} <= set(results[0])
    assert results[0]["score"] >= results[-1]["score"]
    r = client.post(
        f"/v1/collections/{ingested}/search",
        json={"text": "river", "top_k": 40, "filter": {"metadata.parity": "even"}},
    )
    assert {h["payload"]["metadata"]["parity"] for h in r.json()["results"]} == {"even"}
    listed = {c["name"]: c for c in client.get("/v1/collections").json()["data"]}
    assert listed[ingested]["points"] >= 38 and listed[ingested]["context_version"] == 1
    assert listed[ingested]["documents"] == listed[ingested]["points"]  # short: one chunk each
    client.post(
        f"/v1/collections/{ingested}/documents",
        json={"documents": [{"id": "tmp1", "text": "to delete"}]},
    )
    r = client.request(
        "DELETE", f"/v1/collections/{ingested}/documents", json={"ids": ["tmp1", "never-there"]}
    )
    assert r.status_code == 200 and r.json() == {"deleted": 1}


def test_search_returns_documents_with_their_best_chunk_or_raw_chunks(
    client: TestClient, api_service: Cdeq
) -> None:
    text = " ".join(f"word{i} stone{i % 13} river{i % 7}." for i in range(400))  # > 512 tokens
    r = client.post(
        "/v1/collections/longdocs/documents",
        json={
            "documents": [
                {"id": "long", "text": text, "metadata": {"kind": "long"}},
                *corpus(40),
            ]
        },
    )
    assert r.status_code == 200 and r.json()["chunks"] > 41, r.text
    chunks = [
        h
        for h in api_service.store.search(
            "longdocs", np.ones(api_service.store.dim, np.float32) / 8, top_k=100, group=False
        )
        if h.document_id == "long"
    ]
    last = max(chunks, key=lambda h: h.chunk_index)
    query = last.payload["text"]
    r = client.post("/v1/collections/longdocs/search", json={"text": query, "top_k": 3})
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    assert (top["id"], top["chunk_index"], top["text"]) == ("long", last.chunk_index, query)
    assert text[top["char_start"] : top["char_end"]] == query
    assert top["metadata"] == {"kind": "long"} and top["chunk_count"] == len(chunks)
    assert len({h["id"] for h in r.json()["results"]}) == 3
    r = client.post(
        "/v1/collections/longdocs/search", json={"text": query, "top_k": 50, "group": False}
    )
    assert sum(h["id"] == "long" for h in r.json()["results"]) == len(chunks) > 1
    assert_error(
        client.post("/v1/collections/longdocs/search", json={"text": "x", "group": "no"}),
        400,
        "group",
    )


def test_local_qdrant_under_concurrent_reads_and_writes(client: TestClient, ingested: str) -> None:
    """Local-mode Qdrant is not thread-safe; the API serializes store work, so a search beside
    an ingest neither fails nor is mistaken for bad input."""
    stop = threading.Event()
    statuses: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            statuses.append(
                client.post(
                    f"/v1/collections/{ingested}/search", json={"text": "river"}
                ).status_code
            )
            statuses.append(client.get("/v1/collections").status_code)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for k in range(4):
            more = [{"id": f"c{k}-{j}", "text": f"concurrent {k} {j} river"} for j in range(150)]
            assert (
                client.post(
                    f"/v1/collections/{ingested}/documents", json={"documents": more}
                ).status_code
                == 200
            )
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert statuses and set(statuses) == {200}, sorted(set(statuses))


# ---- auth ---------------------------------------------------------------------------------------
def test_auth(keyed: TestClient) -> None:
    rw = {"Authorization": f"Bearer {RW}"}
    ro = {"Authorization": f"Bearer {RO}"}
    body = {"input": "hello"}
    assert_error(keyed.post("/v1/embeddings", json=body), 401)
    r = keyed.post("/v1/embeddings", json=body, headers={"Authorization": "Bearer wrong-key"})
    assert_error(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"
    assert_error(
        keyed.post("/v1/embeddings", json=body, headers={"Authorization": f"Basic {RW}"}), 401
    )
    assert_error(
        keyed.post("/v1/embeddings", json=body, headers={"Authorization": f"Bearer {RW}x"}), 401
    )
    # auth comes before the body is even looked at
    assert_error(
        keyed.post("/v1/embeddings", content=b"\xff", headers={"Content-Type": "application/json"}),
        401,
    )
    assert keyed.post("/v1/embeddings", json=body, headers=ro).status_code == 200
    assert keyed.post("/v1/embeddings", json=body, headers=rw).status_code == 200
    assert keyed.get("/v1/collections", headers=ro).status_code == 200
    assert_error(keyed.get("/v1/collections"), 401)
    # TEI's routes too, `/` included (huggingface_hub posts there): 401, never a 404
    for route in ("/", "/embed"):
        assert_error(keyed.post(route, json={"inputs": "x"}), 401)
        wrong = {"Authorization": "Bearer wrong-key"}
        assert_error(keyed.post(route, json={"inputs": "x"}, headers=wrong), 401)
        assert keyed.post(route, json={"inputs": "x"}, headers=ro).status_code == 200
    assert_error(keyed.get("/info"), 401)
    assert keyed.get("/health").status_code == 200  # a probe, like /healthz: no key
    docs = {"documents": [{"id": "a1", "text": "auth test document"}]}
    err = assert_error(
        keyed.post("/v1/collections/auth-test/documents", json=docs, headers=ro), 403
    )
    assert err["code"] == "insufficient_permissions"
    assert_error(
        keyed.request(
            "DELETE", "/v1/collections/auth-test/documents", json={"ids": ["a1"]}, headers=ro
        ),
        403,
    )
    assert (
        keyed.post("/v1/collections/auth-test/documents", json=docs, headers=rw).status_code == 200
    )
    assert keyed.request(
        "DELETE", "/v1/collections/auth-test/documents", json={"ids": ["a1"]}, headers=rw
    ).json() == {"deleted": 1}
    for open_route in ("/healthz", "/readyz", "/metrics"):
        assert keyed.get(open_route).status_code == 200, open_route


def test_open_api_only_on_loopback(api_service: Cdeq, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(InvalidInput, match="without API keys"):
        create_app(with_api(api_service, host="0.0.0.0"), api_service)
    with pytest.raises(InvalidInput, match="without API keys"):
        create_app(with_api(api_service, host="example.org"), api_service)
    create_app(with_api(api_service, host="0.0.0.0", allow_open=True), api_service)
    create_app(with_api(api_service, host="0.0.0.0", keys=[SecretStr("k" * 32)]), api_service)
    with caplog.at_level(logging.WARNING, logger="app.api.auth"):
        create_app(with_api(api_service, host="::1"), api_service)
    assert "OPEN" in caplog.text


def test_cli_serve_refuses_an_open_public_address(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app import cli

    for name in [n for n in os.environ if n.startswith("CDEQ_")]:
        monkeypatch.delenv(name)
    assert (
        cli.main(["serve", "--host", "0.0.0.0", "--model", "/nonexistent"]) == 2
    )  # before any model load
    assert "--open" in capsys.readouterr().err


@pytest.mark.parametrize(
    "key", ["change-me-openssl-rand-hex-32", "x" * 31, "CHANGE-ME-" + "a" * 40, "example" * 9]
)
def test_weak_keys_are_refused_outside_loopback(
    api_service: Cdeq, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    for field in ("keys", "read_only_keys"):
        with pytest.raises(InvalidInput, match=r"(placeholder|fewer than 32).*not loopback") as err:
            create_app(
                with_api(api_service, host="0.0.0.0", **{field: [SecretStr(key)]}), api_service
            )
        assert key not in str(err.value)  # the message names the variable, never the key
    with caplog.at_level(logging.WARNING, logger="app.api.auth"):
        create_app(with_api(api_service, host="127.0.0.1", keys=[SecretStr(key)]), api_service)
    assert "weak API keys" in caplog.text and key not in caplog.text
    create_app(with_api(api_service, host="0.0.0.0", keys=[SecretStr("f" * 64)]), api_service)


def test_security_headers_on_every_answer(client: TestClient) -> None:
    for response in (
        client.get("/healthz"),
        client.post("/v1/embeddings", json={"input": "hello"}),
        client.post("/v1/embeddings", json={"input": []}),  # errors too
        client.get("/no-such-route"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff", response.url
        assert response.headers["cache-control"] == "no-store", response.url


def test_key_settings_are_checked(api_service: Cdeq) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        create_app(with_api(api_service, keys=[SecretStr("")]), api_service)
    with pytest.raises(InvalidInput, match=r"the same key as CDEQ_API__KEYS\[0\]"):
        create_app(
            with_api(api_service, keys=[SecretStr(RW)], read_only_keys=[SecretStr(RW)]), api_service
        )


def test_keys_are_kept_only_as_hashes(keyed: TestClient) -> None:
    ring = keyed.app.state.keys  # type: ignore[attr-defined]
    assert RW.encode() not in repr(vars(ring)).encode() and RW not in repr(vars(ring))


# ---- probes and metrics -------------------------------------------------------------------------
def test_probes_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["model"] == "ok"
    client.post("/v1/embeddings", json={"input": ["metrics one", "search_query: metrics two"]})
    client.get("/v1/does-not-exist")
    text = client.get("/metrics").text
    assert 'cdeq_http_requests_total{method="POST",route="/v1/embeddings",status="200"}' in text
    assert 'route="unmatched",status="404"' in text
    assert (
        'cdeq_http_request_duration_seconds_count{method="POST",route="/v1/embeddings",status="200"}'
        in text
    )
    assert 'cdeq_embedded_tokens_total{input_type="query"}' in text
    assert 'cdeq_embedded_tokens_total{input_type="document"}' in text
    assert "cdeq_ingest_queue_depth" not in text.replace(
        "# HELP cdeq_ingest_queue_depth", ""
    ).replace("# TYPE cdeq_ingest_queue_depth", "")


def test_process_and_python_metrics_can_be_turned_off(api_service: Cdeq) -> None:
    """prometheus_client's process and Python collectors are on by default, and off with
    CDEQ_API__PROCESS_METRICS=false (cdeq's own metrics stay)."""
    on = create_app(api_service.settings, api_service).state.metrics.render().decode()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"):
        assert f"\n{name}" in on, name
    assert "python_gc_collections_total" in on
    settings = with_api(api_service, process_metrics=False)
    off = create_app(settings, api_service).state.metrics.render().decode()
    assert "process_" not in off and "python_" not in off
    assert "cdeq_http_requests" in off


def test_openapi_documents_the_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {
        "/v1/embeddings",
        "/v1/collections/{name}/documents",
        "/v1/collections/{name}/search",
        "/v1/collections",
        "/v1/jobs/{job_id}",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= set(spec["paths"])
    body = spec["paths"]["/v1/embeddings"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert {"input", "model", "encoding_format", "collection", "input_type", "truncate"} <= set(
        body["properties"]
    )


def test_each_app_has_its_own_registry(api_service: Cdeq) -> None:
    first, second = (
        create_app(api_service.settings, api_service),
        create_app(api_service.settings, api_service),
    )
    assert first.state.metrics.registry is not second.state.metrics.registry


def test_readyz_names_the_failed_dependency(
    api_service: Cdeq, embedder: Any, tmp_path: Any
) -> None:
    settings = Settings(
        qdrant=QdrantSettings(path=str(tmp_path / "q")),
        redis=RedisSettings(url="redis://127.0.0.1:1/0"),
        api=ApiSettings(),
    )
    service = Cdeq(settings, embedder=embedder)
    try:
        with TestClient(create_app(settings, service)) as c:
            r = c.get("/readyz")
            err = assert_error(r, 503)
            assert "redis" in err["message"] and r.json()["checks"]["qdrant"] == "ok"
            assert r.headers["retry-after"]
            # a route that needs Redis answers 503 with Retry-After, not 500
            r = c.post("/v1/collections/x/documents", json={"documents": corpus(2)})
            assert_error(r, 503)
            assert r.headers["retry-after"]
    finally:
        service.close()
