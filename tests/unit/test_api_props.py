"""Property: whatever JSON (or bytes) a client sends to any route, the answer is never a 5xx,
and every error has the OpenAI error shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.api import create_app
from app.service import Cdeq

# Any character, lone surrogates included (sent as \udXXX escapes, which is valid JSON).
chars = st.characters(codec=None, categories=None) | st.sampled_from(
    ["\ud800", "\udfff", "\x00", "/", "é"]
)
texts = st.text(chars, max_size=40)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def field(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly plausible values for a field, often anything at all."""
    return plausible | json_values


def bodies(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with any subset of `fields`, sometimes with an unknown extra field."""
    return st.fixed_dictionaries({}, optional={**fields, "extra": json_values})


embedding_bodies = bodies(
    {
        "input": field(texts | st.lists(texts, max_size=5) | st.lists(st.integers(), max_size=3)),
        "model": field(st.just("cde-small-v1")),
        "encoding_format": field(st.sampled_from(["float", "base64"])),
        "dimensions": field(st.just(64)),
        "user": json_values,
        "collection": field(st.sampled_from(["props", "no-such", "..", "A" * 100])),
        "input_type": field(st.sampled_from(["query", "document"])),
        "truncate": field(st.booleans()),
    }
)
document = st.fixed_dictionaries(
    {}, optional={"id": field(texts), "text": field(texts), "metadata": json_values}
)
documents_bodies = bodies({"documents": field(st.lists(document | json_values, max_size=4))})
search_bodies = bodies(
    {
        "text": field(texts),
        "top_k": field(st.integers(-5, 2000)),
        "filter": field(
            st.dictionaries(
                st.sampled_from(["metadata.n", "document_id", ""]) | texts, json_values, max_size=3
            )
        ),
    }
)
delete_bodies = bodies({"ids": field(st.lists(texts | st.integers() | json_values, max_size=4))})
names = st.sampled_from(["props", "no-such", "..", "a/b", "x" * 300, "cdeq_meta"]) | texts


def encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()  # ASCII escapes carry lone surrogates


def check(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["param"] is None or isinstance(error["param"], str)


@pytest.fixture(scope="module")
def client(api_service: Cdeq) -> Iterator[TestClient]:
    with TestClient(create_app(api_service.settings, api_service)) as c:
        docs = [
            {"id": str(i), "text": f"property doc {i} on topic {i % 4}", "metadata": {"n": i}}
            for i in range(40)
        ]
        assert (
            c.post("/v1/collections/props/documents", json={"documents": docs}).status_code == 200
        )
        yield c


PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON = {"Content-Type": "application/json"}


@PROPS
@given(body=embedding_bodies | json_values)
def test_embeddings_never_5xx(client: TestClient, body: Any) -> None:
    check(client.post("/v1/embeddings", content=encode(body), headers=JSON))


@PROPS
@given(name=names, body=documents_bodies | json_values)
def test_ingest_never_5xx(client: TestClient, name: str, body: Any) -> None:
    check(
        client.post(
            f"/v1/collections/{quote(name, safe='', errors='surrogatepass')}/documents",
            content=encode(body),
            headers=JSON,
        )
    )


@PROPS
@given(name=names, body=search_bodies | json_values)
def test_search_never_5xx(client: TestClient, name: str, body: Any) -> None:
    check(
        client.post(
            f"/v1/collections/{quote(name, safe='', errors='surrogatepass')}/search",
            content=encode(body),
            headers=JSON,
        )
    )


@PROPS
@given(name=names, body=delete_bodies | json_values)
def test_delete_never_5xx(client: TestClient, name: str, body: Any) -> None:
    check(
        client.request(
            "DELETE",
            f"/v1/collections/{quote(name, safe='', errors='surrogatepass')}/documents",
            content=encode(body),
            headers=JSON,
        )
    )


@PROPS
@given(
    raw=st.binary(max_size=200),
    route=st.sampled_from(["/v1/embeddings", "/v1/collections/props/search"]),
)
def test_raw_bytes_never_5xx(client: TestClient, raw: bytes, route: str) -> None:
    check(client.post(route, content=raw, headers=JSON))
