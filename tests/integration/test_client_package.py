"""cdeq-client and TEI clients against a real `cdeq serve` with an API key: the client package
installed alone in a fresh venv (no torch), huggingface_hub's InferenceClient unchanged, and
the LangChain adapter's async path."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers.builders import ROOT, Server, corpus, cosine, serve_process
from tests.helpers.wheelhouse import wheelhouse

pytestmark = pytest.mark.slow

KEY = secrets.token_hex(32)
AUTH = {"Authorization": f"Bearer {KEY}"}
QUESTION = "when is high tide in region 3?"
TEXTS = ["the moon pulls the sea", "ebb and flow", "harbours and boats"]


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("client-server")
    env = {"CDEQ_QDRANT__PATH": str(tmp / "qdrant"), "CDEQ_API__KEYS": f'["{KEY}"]'}
    with serve_process(tiny_model_dir, tmp, env) as srv:
        yield srv


def direct(server: Server, texts: list[str], input_type: str, collection: str | None) -> np.ndarray:
    """What `/v1/embeddings` answers, called by hand."""
    body: dict[str, object] = {"input": texts, "input_type": input_type}
    if collection is not None:
        body["collection"] = collection
    r = httpx.post(f"{server.url}/v1/embeddings", json=body, headers=AUTH, timeout=120)
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])])


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `pip install ./clients/python` and nothing else, from wheels of this
    interpreter's httpx (and what it needs) and setuptools: no index, no network."""
    tmp = tmp_path_factory.mktemp("client-venv")
    wheelhouse(["httpx", "setuptools"], tmp / "wheels")
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True)
    python = tmp / "venv" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no find-links or index of this machine's pip config
    done = subprocess.run(
        [
            *(str(python), "-m", "pip", "install", "--quiet", "--no-index"),
            *("--find-links", str(tmp / "wheels"), str(ROOT / "clients" / "python")),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return python


def test_the_client_alone_in_a_fresh_venv(server: Server, venv_python: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"CDEQ_URL": server.url, "CDEQ_API_KEY": KEY})
    docs = corpus(40, "tide")
    run = subprocess.run(
        [str(venv_python), str(ROOT / "tests" / "data" / "client" / "fresh_venv_script.py")],
        input=json.dumps(docs),
        env=env,
        cwd=venv_python.parent,  # not the repository: `app` must not be importable
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["torch"] is False and got["app"] is False
    assert got["job"] == {"state": "done", "succeeded": 40, "total": 40}

    # search: what the route answers when called by hand, filter applied
    body = {"text": QUESTION, "top_k": 3, "filter": {"metadata.parity": "odd"}}
    want = httpx.post(
        f"{server.url}/v1/collections/venv-tides/search", json=body, headers=AUTH, timeout=60
    ).json()["results"]
    assert [h[0] for h in got["hits"]] == [r["id"] for r in want]
    assert [h[1] for h in got["hits"]] == pytest.approx([r["score"] for r in want], abs=1e-5)
    assert [h[2] for h in got["hits"]] == ["odd"] * 3
    assert got["deleted"] == 2

    query = np.array(got["query"])
    assert cosine(query, direct(server, [QUESTION], "query", "venv-tides"))[0] >= 0.99999
    assert cosine(query, direct(server, [QUESTION], "document", "venv-tides"))[0] < 0.99999
    assert cosine(np.array(got["async_query"]), query)[0] >= 0.99999
    documents = direct(server, TEXTS, "document", "venv-tides")
    assert (cosine(np.array(got["documents"]), documents) >= 0.99999).all()
    generic = direct(server, TEXTS, "document", None)
    assert (cosine(np.array(got["generic"]), generic) >= 0.99999).all()
    assert (cosine(generic, documents) < 0.99999).all()  # the collection's context was used

    assert got["collections"]["venv-tides"] == 40  # listed before the delete
    assert got["context_version"] >= 1
    errors = got["errors"]
    assert errors["401"][:2] == [401, "invalid_api_key"]
    assert errors["404"][:2] == [404, "not_found"] and "no-such-collection" in errors["404"][2]
    assert errors["413"] == [413, "input_too_long", "input[0]"]


def test_huggingface_inference_client_unchanged(server: Server) -> None:
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    hf = InferenceClient(base_url=server.url, api_key=KEY)
    text = "when is high tide?"
    got = np.asarray(hf.feature_extraction(text))
    embed = httpx.post(f"{server.url}/embed", json={"inputs": text}, headers=AUTH).json()
    assert got.shape == (1, len(embed[0]))
    assert cosine(got, np.array(embed))[0] >= 0.99999
    query = np.asarray(hf.feature_extraction(text, prompt_name="query"))
    assert cosine(query, direct(server, [text], "query", None))[0] >= 0.99999
    assert cosine(query, got)[0] < 0.99999

    wrong = InferenceClient(base_url=server.url, api_key="not-the-key")
    with pytest.raises(HfHubHTTPError) as exc:
        wrong.feature_extraction(text)
    assert exc.value.response is not None and exc.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as exc:
        hf.feature_extraction(text, prompt_name="instruction")
    assert exc.value.response is not None and exc.value.response.status_code == 400
    assert "'query', 'document', 'passage'" in exc.value.response.text


def test_langchain_adapter_async_from_the_client_package(server: Server) -> None:
    pytest.importorskip("langchain_core")
    from cdeq_client import Client
    from cdeq_client.langchain import CdeqEmbeddings

    with Client(server.url, api_key=KEY) as cdeq:
        cdeq.ingest("lc-tides", corpus(40, "tide"), wait=True)
    lc = CdeqEmbeddings(server.url, api_key=KEY, collection="lc-tides", batch_size=2)

    async def both() -> tuple[list[float], list[list[float]]]:
        return await asyncio.gather(lc.aembed_query(QUESTION), lc.aembed_documents(TEXTS))

    for _ in range(2):  # a new event loop each time: the adapter must not mind
        query, docs = asyncio.run(both())
        want = direct(server, [QUESTION], "query", "lc-tides")
        assert cosine(np.array(query), want)[0] >= 0.99999
        assert cosine(np.array(lc.embed_query(QUESTION)), want)[0] >= 0.99999
        want_docs = direct(server, TEXTS, "document", "lc-tides")
        assert (cosine(np.array(docs), want_docs) >= 0.99999).all()
    assert asyncio.run(lc.aembed_documents([])) == []
