"""The framework adapters against the real packages and a real `cdeq serve` with an API key:
LlamaIndex's `CdeqEmbedding` (sync and async), the errors both adapters raise, and cdeq
collections read through LlamaIndex's and LangChain's own Qdrant vector stores."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.ingest import ingest_documents
from app.query import search
from app.service import Cdeq
from tests.helpers.builders import Server, corpus, cosine, free_port, serve_process

pytest.importorskip("llama_index.core")
pytestmark = pytest.mark.slow

KEY = secrets.token_hex(32)
QUESTION = "when is high tide in region 3?"
TEXTS = [
    "the moon pulls the sea",
    "ebb and flow",
    "harbours and boats",
    "a spring tide after the full moon",
    "sandbars at low water",
]


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("rag-server")
    env = {"CDEQ_QDRANT__PATH": str(tmp / "qdrant"), "CDEQ_API__KEYS": f'["{KEY}"]'}
    with serve_process(tiny_model_dir, tmp, env) as srv:
        r = httpx.post(
            f"{srv.url}/v1/collections/tides/documents",
            json={"documents": corpus(40, "tide")},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        yield srv


def direct(server: Server, texts: list[str], input_type: str, collection: str | None) -> np.ndarray:
    """What `/v1/embeddings` itself answers, called by hand."""
    body: dict[str, object] = {"input": texts, "input_type": input_type}
    if collection is not None:
        body["collection"] = collection
    r = httpx.post(
        f"{server.url}/v1/embeddings",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])])


def test_llamaindex_embeds_queries_as_queries_in_the_collections_context(server: Server) -> None:
    from cdeq_client.llamaindex import CdeqEmbedding

    model = CdeqEmbedding(server.url, api_key=KEY, collection="tides", embed_batch_size=2)
    query = np.array(model.get_query_embedding(QUESTION))
    assert cosine(query, direct(server, [QUESTION], "query", "tides")[0]) >= 0.99999
    # the input type and the collection both change the vector, so both were sent
    assert cosine(query, direct(server, [QUESTION], "document", "tides")[0]) < 0.99999
    assert cosine(query, direct(server, [QUESTION], "query", None)[0]) < 0.99999

    want = direct(server, TEXTS, "document", "tides")
    assert (cosine(want[:-1], want[1:]) < 0.99999).all()  # distinct rows: a swap would show
    docs = np.array(model.get_text_embedding_batch(TEXTS))  # three requests of at most two
    assert docs.shape == want.shape
    assert (cosine(docs, want) >= 0.99999).all()
    assert cosine(np.array(model.get_text_embedding(TEXTS[3])), want[3]) >= 0.99999


def test_llamaindex_async_path(server: Server) -> None:
    from cdeq_client.llamaindex import CdeqEmbedding

    model = CdeqEmbedding(server.url, api_key=KEY, collection="tides", embed_batch_size=2)

    async def both() -> tuple[list[float], list[list[float]], list[float]]:
        return await asyncio.gather(
            model.aget_query_embedding(QUESTION),
            model.aget_text_embedding_batch(TEXTS),  # three batches, sent concurrently
            model.aget_text_embedding(TEXTS[0]),
        )

    want = direct(server, TEXTS, "document", "tides")
    for _ in range(2):  # each asyncio.run has a new event loop; the adapter must not mind
        query, docs, one = asyncio.run(both())
        assert cosine(np.array(query), direct(server, [QUESTION], "query", "tides")[0]) >= 0.99999
        assert (cosine(np.array(docs), want) >= 0.99999).all()
        assert cosine(np.array(one), want[0]) >= 0.99999


def test_adapters_raise_cdeqs_status_and_message(server: Server) -> None:
    from cdeq_client.langchain import CdeqEmbeddings
    from cdeq_client.llamaindex import CdeqAPIError, CdeqEmbedding

    wrong_key = CdeqEmbedding(server.url, api_key="not-the-key", collection="tides")
    with pytest.raises(CdeqAPIError, match=r"cdeq answered 401 \(invalid_api_key\)") as exc:
        wrong_key.get_query_embedding(QUESTION)
    assert exc.value.status_code == 401
    with pytest.raises(CdeqAPIError, match="401"):
        asyncio.run(wrong_key.aget_text_embedding_batch(TEXTS))
    with pytest.raises(CdeqAPIError, match="401"):
        CdeqEmbeddings(server.url, collection="tides").embed_query(QUESTION)  # no key at all

    unknown = CdeqEmbedding(server.url, api_key=KEY, collection="no-such-collection")
    with pytest.raises(CdeqAPIError, match="no-such-collection") as exc:
        unknown.get_text_embedding_batch(TEXTS)
    assert exc.value.status_code == 404, exc.value
    lc_unknown = CdeqEmbeddings(server.url, api_key=KEY, collection="no-such-collection")
    with pytest.raises(CdeqAPIError, match=r"404.*no-such-collection"):
        lc_unknown.embed_documents(TEXTS)

    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=f"cannot reach cdeq at {nobody}/v1/embeddings"):
        CdeqEmbedding(nobody).get_query_embedding(QUESTION)
    with pytest.raises(ConnectionError, match="cannot reach cdeq"):
        asyncio.run(CdeqEmbedding(nobody).aget_query_embedding(QUESTION))


@pytest.fixture(scope="module")
def tides_store(api_service: Cdeq) -> Cdeq:
    """The same documents ingested in this process, whose local Qdrant the frameworks may
    open (the server's folder is locked by the server). The context is deterministic, so the
    server's query vectors fit these points too."""
    ingest_documents("tides", corpus(40, "tide"), service=api_service)
    return api_service


def test_frameworks_qdrant_stores_read_a_cdeq_collection(server: Server, tides_store: Cdeq) -> None:
    pytest.importorskip("llama_index.vector_stores.qdrant")
    pytest.importorskip("langchain_qdrant")
    from cdeq_client.langchain import CdeqEmbeddings
    from cdeq_client.llamaindex import CdeqEmbedding
    from langchain_qdrant import QdrantVectorStore as LangChainQdrant
    from llama_index.core import VectorStoreIndex
    from llama_index.vector_stores.qdrant import QdrantVectorStore as LlamaQdrant
    from qdrant_client import models

    texts = {d["id"]: d["text"] for d in corpus(40, "tide")}
    hits = search("tides", QUESTION, top_k=4, service=tides_store)  # cdeq's own ranking
    client = tides_store.store.client  # "tides" is an alias of the live physical collection

    # LlamaIndex: the store finds cdeq's unnamed dot-product vector itself; text under "text"
    embed_model = CdeqEmbedding(server.url, api_key=KEY, collection="tides")
    store = LlamaQdrant(collection_name="tides", client=client, text_key="text")
    index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)
    nodes = index.as_retriever(similarity_top_k=4).retrieve(QUESTION)
    assert [n.node.metadata["document_id"] for n in nodes] == [h.document_id for h in hits]
    assert [n.node.get_content() for n in nodes] == [texts[h.document_id] for h in hits]
    assert np.allclose([n.score for n in nodes], [h.score for h in hits], atol=1e-4)
    assert nodes[0].node.metadata["metadata"] == hits[0].payload["metadata"]

    # LangChain: the collection's distance is dot (cosine on unit vectors), no vector name
    lc = LangChainQdrant(
        client,
        collection_name="tides",
        embedding=CdeqEmbeddings(server.url, api_key=KEY, collection="tides"),
        content_payload_key="text",
        metadata_payload_key="metadata",
        distance=models.Distance.DOT,
    )
    found = lc.similarity_search_with_score(QUESTION, k=4)
    assert [doc.page_content for doc, _ in found] == [texts[h.document_id] for h in hits]
    assert np.allclose([score for _, score in found], [h.score for h in hits], atol=1e-4)
    user_metadata = {k: v for k, v in found[0][0].metadata.items() if not k.startswith("_")}
    assert user_metadata == hits[0].payload["metadata"]  # LangChain adds _id, _collection_name
