"""Deprecated: use `cdeq_client.langchain` (the `cdeq-client` distribution, clients/python/)."""

from __future__ import annotations

from app.integrations import moved

_new = moved("app.integrations.langchain", "cdeq_client.langchain")
CdeqAPIError = _new.CdeqAPIError
CdeqEmbeddings = _new.CdeqEmbeddings

__all__ = ["CdeqAPIError", "CdeqEmbeddings"]
