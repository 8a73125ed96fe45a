"""A LangChain `Embeddings` over a running `cdeq serve` (install the `langchain` extra).

LangChain's `OpenAIEmbeddings` pointed at cdeq sends every text as a document (there is no
input type in OpenAI's protocol) against the generic context, and by default sends tiktoken
token ids. `CdeqEmbeddings` sends texts, `input_type: "query"` from `embed_query`,
`"document"` from `embed_documents`, and the `collection` whose context to use:

    from app.integrations.langchain import CdeqEmbeddings
    embeddings = CdeqEmbeddings(base_url="http://127.0.0.1:8000", api_key=KEY, collection="notes")
    embeddings.embed_query("how do tides work?")
"""

from __future__ import annotations

from typing import Any

import httpx
from langchain_core.embeddings import Embeddings


class CdeqEmbeddings(Embeddings):
    """Embeddings from cdeq's `/v1/embeddings`, with the right input type and collection."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        collection: str | None = None,
        batch_size: int = 256,
        timeout_s: float = 120.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.collection = collection
        self.batch_size = batch_size
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout_s, headers=headers)

    def _embed(self, texts: list[str], input_type: str) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            body: dict[str, Any] = {
                "input": texts[start : start + self.batch_size],
                "input_type": input_type,
            }
            if self.collection is not None:
                body["collection"] = self.collection
            response = self._client.post(f"{self.base_url}/v1/embeddings", json=body)
            if response.status_code != 200:
                raise ValueError(f"cdeq answered {response.status_code}: {response.text[:500]}")
            data = sorted(response.json()["data"], key=lambda d: d["index"])
            vectors.extend(d["embedding"] for d in data)
        return vectors

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._embed(list(texts), "document") if texts else []

    def embed_query(self, text: str) -> list[float]:
        return self._embed([text], "query")[0]
