"""A LangChain `Embeddings` over a running `cdeq serve` (install `cdeq-client[langchain]`).

LangChain's `OpenAIEmbeddings` pointed at cdeq sends every text as a document (there is no
input type in OpenAI's protocol) against the generic context, and by default sends tiktoken
token ids. `CdeqEmbeddings` sends texts, `input_type: "query"` from `embed_query`,
`"document"` from `embed_documents`, and the `collection` whose context to use:

    from cdeq_client.langchain import CdeqEmbeddings
    embeddings = CdeqEmbeddings("http://127.0.0.1:8000", collection="notes")
    embeddings.embed_query("how do tides work?")

A non-200 answer raises `CdeqAPIError` (a ValueError) with the status code, cdeq's error
code and message; 429 and 503 are retried first (`max_retries`).
"""

from __future__ import annotations

from langchain_core.embeddings import Embeddings

from cdeq_client.client import AsyncClient, Client
from cdeq_client.errors import CdeqAPIError

__all__ = ["CdeqAPIError", "CdeqEmbeddings"]


class CdeqEmbeddings(Embeddings):
    """Embeddings from cdeq's `/v1/embeddings`, with the right input type and collection."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        collection: str | None = None,
        batch_size: int = 256,
        timeout_s: float = 120.0,
        max_retries: int = 3,
    ) -> None:
        self._options = {
            "api_key": api_key,
            "timeout_s": timeout_s,
            "max_retries": max_retries,
            "embed_batch_size": batch_size,
        }
        try:
            self._client = Client(base_url, **self._options)  # type: ignore[arg-type]
        except ValueError as exc:  # this adapter calls the setting batch_size
            raise ValueError(str(exc).replace("embed_batch_size", "batch_size")) from None
        self.base_url = self._client.base_url
        self.collection = collection
        self.batch_size = batch_size

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return self._client.embed(texts, input_type="document", collection=self.collection)

    def embed_query(self, text: str) -> list[float]:
        return self._client.embed([text], input_type="query", collection=self.collection)[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        # One AsyncClient per call: a pooled one would outlive the event loop that made it.
        async with AsyncClient(self.base_url, **self._options) as client:  # type: ignore[arg-type]
            return await client.embed(texts, input_type="document", collection=self.collection)

    async def aembed_query(self, text: str) -> list[float]:
        async with AsyncClient(self.base_url, **self._options) as client:  # type: ignore[arg-type]
            return (await client.embed([text], input_type="query", collection=self.collection))[0]
