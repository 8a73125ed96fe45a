"""A LlamaIndex `BaseEmbedding` over a running `cdeq serve` (install `cdeq-client[llamaindex]`).

LlamaIndex embeds queries through `get_query_embedding` and nodes through
`get_text_embedding(_batch)`; `CdeqEmbedding` sends the first as `input_type: "query"` and
the others as `"document"`, with the `collection` whose context to use (the `aget_…` methods
are asynchronous end to end):

    from cdeq_client.llamaindex import CdeqEmbedding
    embed_model = CdeqEmbedding("http://127.0.0.1:8000", collection="notes")
    embed_model.get_query_embedding("how do tides work?")

LlamaIndex cuts long lists into batches of `embed_batch_size` (at most 2,048, cdeq's default
`CDEQ_API__MAX_INPUTS`); each batch is one request. The API key lives in a private
attribute, so it is never part of the model's fields, its `to_dict()` or its `to_payload()`.
A non-200 answer raises `CdeqAPIError` (a ValueError) with the status code, cdeq's error code
and message; 429 and 503 are retried first (`max_retries`).
"""

from __future__ import annotations

from typing import Any

from llama_index.core.embeddings import BaseEmbedding
from pydantic import Field, PrivateAttr

from cdeq_client._calls import DEFAULT_URL
from cdeq_client.client import AsyncClient, Client
from cdeq_client.errors import CdeqAPIError
from cdeq_client.types import InputType

__all__ = ["CdeqAPIError", "CdeqEmbedding"]


class CdeqEmbedding(BaseEmbedding):
    """Embeddings from cdeq's `/v1/embeddings`, with the right input type and collection."""

    base_url: str = Field(default=DEFAULT_URL, description="where `cdeq serve` is")
    collection: str | None = Field(
        default=None, description="the collection whose context to embed with; None = generic"
    )
    timeout_s: float = Field(default=120.0, gt=0, description="seconds per request")

    _client: Client = PrivateAttr()
    _options: dict[str, Any] = PrivateAttr()

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        collection: str | None = None,
        embed_batch_size: int = 256,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        model_name: str = "cdeq",
        **kwargs: Any,
    ) -> None:
        options: dict[str, Any] = {
            "api_key": api_key,
            "timeout_s": timeout_s,
            "max_retries": max_retries,
            "embed_batch_size": embed_batch_size,
        }
        client = Client(base_url, **options)  # checks the settings, naming the wrong one
        # this class's own fields go through pydantic too (mypy sees only the base's signature)
        fields: dict[str, Any] = {
            "base_url": client.base_url,
            "collection": collection,
            "timeout_s": timeout_s,
        }
        super().__init__(
            embed_batch_size=embed_batch_size,
            model_name=model_name,
            **fields,
            **kwargs,
        )
        self._client = client
        self._options = options

    @classmethod
    def class_name(cls) -> str:
        return "CdeqEmbedding"

    def _embed(self, texts: list[str], input_type: InputType) -> list[list[float]]:
        if not texts:
            return []
        return self._client.embed(texts, input_type=input_type, collection=self.collection)

    async def _aembed(self, texts: list[str], input_type: InputType) -> list[list[float]]:
        if not texts:
            return []
        # One AsyncClient per call: a pooled one would outlive the event loop that made it
        # (each asyncio.run has its own), and its connections would then fail.
        async with AsyncClient(self.base_url, **self._options) as client:
            return await client.embed(texts, input_type=input_type, collection=self.collection)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query], "query")[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await self._aembed([query], "query"))[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text], "document")[0]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._aembed([text], "document"))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(list(texts), "document")

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await self._aembed(list(texts), "document")
