"""The embeddings use case behind `/v1/embeddings`: texts in, unit vectors out.

Without a collection the generic context is used; with one, the collection's own (the one its
documents were embedded with). A text that already starts with `search_query: ` or
`search_document: ` chooses query or document embedding itself; the others follow the
requested input type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from app.errors import InputTooLong, InvalidInput
from app.model import DOCUMENT_PREFIX, QUERY_PREFIX, valid_unicode
from app.names import check_collection_name
from app.service import Cdeq


class InputType(StrEnum):
    QUERY = "query"
    DOCUMENT = "document"


_PREFIXES = ((QUERY_PREFIX, InputType.QUERY), (DOCUMENT_PREFIX, InputType.DOCUMENT))


@dataclass(frozen=True)
class EmbeddedTexts:
    vectors: np.ndarray  # (n, D) float32, L2-normalized, in input order
    token_counts: list[int]  # tokens the model saw per text (prefix included)
    truncated: list[bool]

    def tokens_by_type(self, types: Sequence[InputType]) -> dict[InputType, int]:
        used: dict[InputType, int] = {}
        for kind, count in zip(types, self.token_counts, strict=True):
            used[kind] = used.get(kind, 0) + count
        return used


def input_types(
    texts: Sequence[str], default: InputType = InputType.DOCUMENT, *, field: str = "input"
) -> tuple[list[str], list[InputType]]:
    """Each text without a leading task prefix, and its input type (the prefix's, or
    ``default``). The model adds the prefix back itself. Raises InvalidInput for a text that
    is empty once its prefix is removed."""
    stripped: list[str] = []
    types: list[InputType] = []
    for i, raw in enumerate(texts):
        text, kind = raw, default
        for prefix, prefix_type in _PREFIXES:
            if raw.startswith(prefix):
                text, kind = raw[len(prefix) :], prefix_type
                break
        if not text.strip():
            raise InvalidInput(
                f"{field}[{i}]: empty or whitespace-only text", field=f"{field}[{i}]"
            )
        if not valid_unicode(text):
            raise InvalidInput(
                f"{field}[{i}]: not valid Unicode (lone surrogate)", field=f"{field}[{i}]"
            )
        stripped.append(text)
        types.append(kind)
    return stripped, types


def embed_texts(
    texts: Sequence[str],
    types: Sequence[InputType],
    *,
    service: Cdeq,
    collection: str | None = None,
    truncate: bool = True,
    field: str = "input",
) -> EmbeddedTexts:
    """Embed ``texts`` (without prefixes) as queries or documents against one context.

    With ``truncate=False`` a text longer than the model's limit raises InputTooLong naming
    it, before any forward pass."""
    embedder = service.embedder
    if collection is not None:
        check_collection_name(collection)
        dataset = service.contexts.current(collection).dataset_embeddings
    else:
        dataset = service.contexts.generic()
    groups: dict[InputType, list[int]] = {InputType.QUERY: [], InputType.DOCUMENT: []}
    for i, kind in enumerate(types):
        groups[kind].append(i)
    if not truncate:
        for kind, indices in groups.items():
            prefix = QUERY_PREFIX if kind == InputType.QUERY else DOCUMENT_PREFIX
            if not indices:
                continue
            _, cut = embedder.tokenize([texts[i] for i in indices], prefix)
            for i, was_cut in zip(indices, cut, strict=True):
                if was_cut:
                    raise InputTooLong(
                        f"{field}[{i}]: longer than the model's limit of {embedder.max_seq_length} "
                        "tokens (prefix included); shorten it, or send truncate: true to embed "
                        "its beginning",
                        field=f"{field}[{i}]",
                    )
    vectors = np.empty((len(texts), embedder.dim), dtype=np.float32)
    tokens = [0] * len(texts)
    truncated = [False] * len(texts)
    for kind, indices in groups.items():
        if not indices:
            continue
        run = embedder.embed_queries if kind == InputType.QUERY else embedder.embed_documents
        out = run([texts[i] for i in indices], dataset)
        vectors[indices] = out.vectors
        for row, i in enumerate(indices):
            tokens[i] = out.token_counts[row]
            truncated[i] = out.truncated[row]
    return EmbeddedTexts(vectors, tokens, truncated)
