"""Documents as callers hand them in, and the rules every one must pass before it is queued."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.errors import InvalidInput
from app.names import check_collection_name

MAX_ID_CHARS = 256
DOCUMENT_KEYS = {"id", "text", "metadata"}


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        """sha256 of text and metadata: tells whether a re-ingested document changed."""
        blob = json.dumps([self.text, self.metadata], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "metadata": self.metadata}


def _check_one(i: int, raw: object, max_text_chars: int, problems: list[str]) -> Document | None:
    where = f"documents[{i}]"
    if not isinstance(raw, Mapping):
        problems.append(
            f"{where}: must be an object with 'id' and 'text', got {type(raw).__name__}"
        )
        return None
    before = len(problems)
    unknown = sorted(str(k) for k in raw if k not in DOCUMENT_KEYS)
    if unknown:
        problems.append(
            f"{where}: unknown field(s) {', '.join(unknown)} (allowed: id, text, metadata)"
        )
    doc_id = raw.get("id")
    if doc_id is None:
        problems.append(f"{where}.id: missing")
    elif isinstance(doc_id, bool) or not isinstance(doc_id, str | int):
        problems.append(f"{where}.id: must be a string (or integer), got {type(doc_id).__name__}")
    else:
        doc_id = str(doc_id)
        if not doc_id.strip():
            problems.append(f"{where}.id: empty")
        elif len(doc_id) > MAX_ID_CHARS:
            problems.append(
                f"{where}.id: {len(doc_id)} characters, more than the limit of {MAX_ID_CHARS}"
            )
    text = raw.get("text")
    if text is None:
        problems.append(f"{where}.text: missing")
    elif not isinstance(text, str):
        problems.append(f"{where}.text: must be a string, got {type(text).__name__}")
    elif not text.strip():
        problems.append(f"{where}.text: empty or whitespace-only")
    elif len(text) > max_text_chars:
        problems.append(
            f"{where}.text: {len(text)} characters, more than the limit of {max_text_chars}"
        )
    else:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            problems.append(f"{where}.text: not valid Unicode (lone surrogate)")
    metadata = raw.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        problems.append(f"{where}.metadata: must be an object, got {type(metadata).__name__}")
    else:
        try:
            json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError) as exc:
            problems.append(f"{where}.metadata: not JSON-serializable ({exc})")
    if len(problems) > before:
        return None
    return Document(id=str(doc_id), text=str(text), metadata=dict(metadata))


def validate_documents(
    collection: object,
    documents: object,
    *,
    max_documents: int,
    max_text_chars: int,
) -> list[Document]:
    """Every document checked; on any violation one `InvalidInput` lists them all."""
    problems: list[str] = []
    try:
        check_collection_name(collection)
    except InvalidInput as exc:
        problems.extend(exc.problems)
    if isinstance(documents, str | bytes | Mapping) or not isinstance(documents, list | tuple):
        problems.append(f"documents: must be a list of objects, got {type(documents).__name__}")
        raise InvalidInput(problems, field="documents")
    if not documents:
        problems.append("documents: empty; give at least one document")
    if len(documents) > max_documents:
        problems.append(
            f"documents: {len(documents)} items, more than the limit of {max_documents} per job"
        )
        raise InvalidInput(problems, field="documents")
    checked: list[Document] = []
    first_seen: dict[str, int] = {}
    for i, raw in enumerate(documents):
        doc = _check_one(i, raw, max_text_chars, problems)
        if doc is None:
            continue
        if doc.id in first_seen:
            problems.append(
                f"documents[{i}].id: {doc.id!r} duplicates documents[{first_seen[doc.id]}].id"
            )
        else:
            first_seen[doc.id] = i
        checked.append(doc)
    if problems:
        raise InvalidInput(problems, field="documents")
    return checked
