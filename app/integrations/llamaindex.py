"""Deprecated: use `cdeq_client.llamaindex` (the `cdeq-client` distribution, clients/python/)."""

from __future__ import annotations

from app.integrations import moved

_new = moved("app.integrations.llamaindex", "cdeq_client.llamaindex")
CdeqAPIError = _new.CdeqAPIError
CdeqEmbedding = _new.CdeqEmbedding

__all__ = ["CdeqAPIError", "CdeqEmbedding"]
