"""A LangChain `Embeddings` over a running `cdeq serve` (install the `langchain` extra).

LangChain's `OpenAIEmbeddings` pointed at cdeq sends every text as a document (there is no
input type in OpenAI's protocol) against the generic context, and by default sends tiktoken
token ids. `CdeqEmbeddings` sends texts, `input_type: "query"` from `embed_query`,
`"document"` from `embed_documents`, and the `collection` whose context to use:

    from app.integrations.langchain import CdeqEmbeddings
    embeddings = CdeqEmbeddings(base_url="http://127.0.0.1:8000", api_key=KEY, collection="notes")
    embeddings.embed_query("how do tides work?")

A non-200 answer raises `CdeqAPIError` (a ValueError) with the status code and cdeq's message.
"""

from __future__ import annotations

from langchain_core.embeddings import Embeddings

from app.integrations._client import CdeqAPIError, CdeqHTTP, check_settings

__all__ = ["CdeqAPIError", "CdeqEmbeddings"]


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
        self.base_url = check_settings(base_url, batch_size, timeout_s)
        self.collection = collection
        self.batch_size = batch_size
        self._http = CdeqHTTP(self.base_url, api_key=api_key, timeout_s=timeout_s)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._http.embed(
            list(texts), "document", collection=self.collection, batch_size=self.batch_size
        )

    def embed_query(self, text: str) -> list[float]:
        return self._http.embed(
            [text], "query", collection=self.collection, batch_size=self.batch_size
        )[0]
