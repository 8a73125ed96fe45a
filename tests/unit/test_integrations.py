"""The framework adapters without a server: settings checked up front with the setting's name,
the API key kept out of LlamaIndex's serialized fields, and every kind of answer turned into
vectors in input order or one clear error. Answers are real `httpx.Response` objects."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from cdeq_client._calls import vectors as _vectors
from cdeq_client.errors import CdeqAPIError

from tests.helpers.builders import free_port

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from cdeq_client.langchain import CdeqEmbeddings
from cdeq_client.llamaindex import CdeqEmbedding

NOBODY = f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_url": "127.0.0.1:8000"}, "base_url: must start with http:// or https://"),
        ({"timeout_s": 0}, "timeout_s: must be a number of seconds above 0, got 0"),
        ({"timeout_s": "10"}, "timeout_s: must be a number of seconds above 0"),
    ],
)
@pytest.mark.parametrize("adapter", [CdeqEmbeddings, CdeqEmbedding])
def test_bad_settings_name_the_setting(adapter: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        adapter(**kwargs)


def test_bad_batch_sizes_name_each_adapters_setting() -> None:
    with pytest.raises(ValueError, match="batch_size: must be an integer of at least 1, got 0"):
        CdeqEmbeddings(batch_size=0)
    with pytest.raises(ValueError, match="embed_batch_size: must be an integer of at least 1"):
        CdeqEmbedding(embed_batch_size=0)
    with pytest.raises(ValueError, match="embed_batch_size"):  # LlamaIndex's own limit: 2,048
        CdeqEmbedding(embed_batch_size=4096)


def test_llamaindex_keeps_the_api_key_out_of_its_fields() -> None:
    key = "sk-cdeq-" + "7" * 40
    model = CdeqEmbedding("http://cdeq.example:8000/", api_key=key, collection="notes")
    assert model.base_url == "http://cdeq.example:8000" and model.collection == "notes"
    for shown in (model.to_dict(), model.to_payload(), model.model_dump_json(), repr(model)):
        assert key not in str(shown)
    assert model.to_dict()["class_name"] == "CdeqEmbedding"


def test_nothing_to_embed_sends_nothing() -> None:
    # NOBODY listens there: a request would raise ConnectionError
    assert CdeqEmbeddings(NOBODY).embed_documents([]) == []
    assert CdeqEmbedding(NOBODY).get_text_embedding_batch([]) == []


def embeddings_body(*rows: tuple[int, list[float]]) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in rows]
    return {"object": "list", "data": data, "model": "cde-small-v1"}


def test_answers_become_vectors_in_input_order() -> None:
    answer = httpx.Response(200, json=embeddings_body((1, [0.0, 1.0]), (0, [1.0, 0.0])))
    assert _vectors(answer, 2) == [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize(
    ("answer", "expected", "message"),
    [
        (
            httpx.Response(
                401,
                json={
                    "error": {"message": "invalid API key", "type": "x", "code": "invalid_api_key"}
                },
            ),
            1,
            r"^cdeq answered 401 \(invalid_api_key\): invalid API key$",
        ),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), 1, r"^cdeq answered 502: <html>"),
        (httpx.Response(503), 1, r"^cdeq answered 503: Service Unavailable$"),
        (httpx.Response(200, text="not json"), 1, "cdeq answered 200: not an embeddings answer"),
        (httpx.Response(200, json={"data": "nope"}), 1, "not an embeddings answer"),
        (
            httpx.Response(200, json=embeddings_body((0, [1.0]))),
            2,
            "cdeq answered 200: 1 embeddings for 2 texts",
        ),
    ],
)
def test_other_answers_raise_a_clear_error(
    answer: httpx.Response, expected: int, message: str
) -> None:
    with pytest.raises(CdeqAPIError, match=message) as exc:
        _vectors(answer, expected)
    assert exc.value.status_code == answer.status_code
    assert isinstance(exc.value, ValueError)  # what the LangChain adapter raised before


def test_client_is_versioned_with_the_server() -> None:
    import tomllib

    import cdeq_client

    import app
    from tests.helpers.builders import ROOT

    server = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert cdeq_client.__version__ == app.__version__ == server["project"]["version"]


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        ("app.integrations.langchain", "cdeq_client.langchain", ["CdeqEmbeddings", "CdeqAPIError"]),
        (
            "app.integrations.llamaindex",
            "cdeq_client.llamaindex",
            ["CdeqEmbedding", "CdeqAPIError"],
        ),
    ],
)
def test_old_import_paths_warn_and_re_export(old: str, new: str, names: list[str]) -> None:
    import importlib
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated.*import {new}"):
        module = importlib.import_module(old)
    moved = importlib.import_module(new)
    for name in names:
        assert getattr(module, name) is getattr(moved, name)


def test_client_settings_name_the_setting() -> None:
    from cdeq_client import AsyncClient, Client

    for cls in (Client, AsyncClient):
        with pytest.raises(ValueError, match="max_retries: must be an integer of at least 0"):
            cls(max_retries=-1)
        with pytest.raises(ValueError, match="backoff_s: must be a number of seconds 0 or more"):
            cls(backoff_s=-0.5)
        with pytest.raises(ValueError, match="max_backoff_s"):
            cls(max_backoff_s="5")
        with pytest.raises(ValueError, match="embed_batch_size: must be an integer of at least 1"):
            cls(embed_batch_size=0)
        with pytest.raises(ValueError, match="base_url: must start with http"):
            cls("localhost:8000")
    client = Client(NOBODY)
    with pytest.raises(ValueError, match="input_type: must be 'query' or 'document'"):
        client.embed(["x"], input_type="passage")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"texts\[1\]: must be a string, got int"):
        client.embed(["x", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="collection: must be a non-empty string"):
        client.search("", "x")
    client.close()


def test_client_reads_the_url_and_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from cdeq_client import Client

    monkeypatch.setenv("CDEQ_API_KEY", "k" * 40)
    assert Client().settings.headers == {"Authorization": "Bearer " + "k" * 40}
    assert Client(api_key="given").settings.headers == {"Authorization": "Bearer given"}
    monkeypatch.delenv("CDEQ_API_KEY")
    assert Client().settings.headers == {}
    monkeypatch.delenv("CDEQ_URL", raising=False)
    assert Client().base_url == "http://127.0.0.1:8000"
    monkeypatch.setenv("CDEQ_URL", "http://cdeq.internal:9000/")
    assert Client().base_url == "http://cdeq.internal:9000"
    assert Client("http://given:1").base_url == "http://given:1"


def test_a_queued_answer_is_a_queued_job_and_progress_lines_change_with_counts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cdeq_client._calls import job_of, reporter
    from cdeq_client.types import Job

    queued = job_of({"job_id": "j1"}, "notes")  # a 202 with a worker queue
    assert (queued.id, queued.collection, queued.state, queued.finished) == (
        "j1",
        "notes",
        "queued",
        False,
    )
    body = {"id": "j1", "collection": "notes", "state": "done", "total": 3, "succeeded": 3}
    done = job_of(body, "notes")  # a 200 in-process: the finished job
    assert done.finished and done.ok and done.total == 3
    show = reporter(True)
    assert show is not None and reporter(False) is None
    running = Job("j1", "notes", "running", total=3, succeeded=1)
    for job in (running, running, done):
        show(job)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "job j1 (notes): running, 1/3 documents",
        "job j1 (notes): done, 3/3 documents",
    ]
