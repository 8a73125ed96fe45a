"""Documents as callers hand them in, and the rules every one must pass before it is queued.

The rules are exactly what the rest of the pipeline can carry: the Celery message (JSON), the
job record in Redis, the content hash (`json.dumps(..., ensure_ascii=False, sort_keys=True)`)
and the Qdrant payload. A document that passes here is therefore stored or fails for a reason
of the model or the store, never for its own shape; one that does not pass is refused before
anything is recorded or queued.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.errors import InvalidInput
from app.names import check_collection_name

MAX_ID_CHARS = 256
DOCUMENT_KEYS = {"id", "text", "metadata"}
# The API's nesting rule; it also keeps every recursive encoder far from the stack limit.
MAX_METADATA_DEPTH = 32
# Integers beyond this lose precision in JavaScript and in any float64 JSON reader: refused
# (not silently turned into strings), so what is stored is what the caller sent.
MAX_SAFE_INTEGER = 2**53 - 1
DEFAULT_MAX_METADATA_BYTES = 64 * 1024
# At most this many problems are listed per document (a 10,000-key bad object stays readable).
_MAX_PROBLEMS_PER_DOCUMENT = 10
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


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


def encode_metadata(metadata: Mapping[str, Any]) -> bytes:
    """Metadata serialized as it is stored and hashed: UTF-8 JSON, keys sorted, no NaN."""
    return json.dumps(
        metadata, ensure_ascii=False, sort_keys=True, allow_nan=False, separators=(",", ":")
    ).encode("utf-8")


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (\ud800-\udfff): not encodable anywhere
        return False
    return True


def _shown(value: str, limit: int = 40) -> str:
    """A value safe to print in an error: repr escapes surrogates and control characters."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _key_path(path: str, key: object) -> str:
    if isinstance(key, str) and _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{_shown(key) if isinstance(key, str) else repr(key)}]"


def _metadata_problems(where: str, metadata: Mapping[Any, Any], max_bytes: int) -> list[str]:
    """Every reason ``metadata`` cannot be stored exactly as given (iterative: any depth)."""
    problems: list[str] = []
    stack: list[tuple[str, int, object]] = [(f"{where}.metadata", 1, metadata)]
    while stack and len(problems) < _MAX_PROBLEMS_PER_DOCUMENT:
        path, depth, value = stack.pop()
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, int):
            if abs(value) > MAX_SAFE_INTEGER:
                problems.append(
                    f"{path}: integer out of the JSON-safe range ±{MAX_SAFE_INTEGER} "
                    "(send it as a string)"
                )
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                problems.append(f"{path}: not JSON-serializable: {value} is not a JSON number")
            continue
        if isinstance(value, str):
            if not _valid_unicode(value):
                problems.append(f"{path}: not valid Unicode (lone surrogate)")
            continue
        if isinstance(value, dict | list | tuple) or (depth == 1 and isinstance(value, Mapping)):
            if depth > MAX_METADATA_DEPTH:
                problems.append(f"{path}: nested deeper than {MAX_METADATA_DEPTH} levels")
                continue
            if isinstance(value, list | tuple):
                stack.extend((f"{path}[{i}]", depth + 1, v) for i, v in enumerate(value))
                continue
            assert isinstance(value, Mapping)
            for key, child in value.items():
                if not isinstance(key, str):
                    problems.append(
                        f"{path}: key {key!r} is a {type(key).__name__}; metadata keys must be strings"
                    )
                elif not _valid_unicode(key):
                    problems.append(
                        f"{path}: key {_shown(key)} is not valid Unicode (lone surrogate)"
                    )
                else:
                    stack.append((_key_path(path, key), depth + 1, child))
            continue
        problems.append(
            f"{path}: not JSON-serializable: {type(value).__name__} is not a JSON type (use "
            "strings, numbers, booleans, null, lists and objects)"
        )
    if problems:
        return problems
    try:
        size = len(encode_metadata(metadata))
    except (TypeError, ValueError, RecursionError) as exc:  # safety net: the walk covers these
        return [f"{where}.metadata: not JSON-serializable ({exc})"]
    if size > max_bytes:
        return [
            f"{where}.metadata: {size} bytes as JSON, more than the limit of {max_bytes} "
            "(CDEQ_INGEST__MAX_METADATA_BYTES)"
        ]
    return []


def _check_id(where: str, doc_id: object, problems: list[str]) -> str | None:
    if doc_id is None:
        problems.append(f"{where}.id: missing")
        return None
    if isinstance(doc_id, bool) or not isinstance(doc_id, str | int):
        problems.append(f"{where}.id: must be a string (or integer), got {type(doc_id).__name__}")
        return None
    if isinstance(doc_id, int):
        if abs(doc_id) > MAX_SAFE_INTEGER:  # str() of a 5,000-digit int raises, too
            problems.append(
                f"{where}.id: integer out of the JSON-safe range ±{MAX_SAFE_INTEGER} "
                "(send it as a string)"
            )
            return None
        return str(doc_id)
    if not doc_id.strip():
        problems.append(f"{where}.id: empty")
    elif len(doc_id) > MAX_ID_CHARS:
        problems.append(
            f"{where}.id: {len(doc_id)} characters, more than the limit of {MAX_ID_CHARS}"
        )
    elif not _valid_unicode(doc_id):
        problems.append(f"{where}.id: {_shown(doc_id)} is not valid Unicode (lone surrogate)")
    else:
        return str(doc_id)
    return None


def _check_one(
    where: str, raw: object, max_text_chars: int, max_metadata_bytes: int, problems: list[str]
) -> Document | None:
    if not isinstance(raw, Mapping):
        problems.append(
            f"{where}: must be an object with 'id' and 'text', got {type(raw).__name__}"
        )
        return None
    before = len(problems)
    unknown = sorted(
        k if isinstance(k, str) and _IDENTIFIER.fullmatch(k) else _shown(str(k))
        for k in raw
        if k not in DOCUMENT_KEYS
    )
    if unknown:
        problems.append(
            f"{where}: unknown field(s) {', '.join(unknown)} (allowed: id, text, metadata)"
        )
    doc_id = _check_id(where, raw.get("id"), problems)
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
    elif not _valid_unicode(text):
        problems.append(f"{where}.text: not valid Unicode (lone surrogate)")
    metadata = raw.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        problems.append(f"{where}.metadata: must be an object, got {type(metadata).__name__}")
    else:
        problems.extend(_metadata_problems(where, metadata, max_metadata_bytes))
    if len(problems) > before or doc_id is None:
        return None
    return Document(id=doc_id, text=str(text), metadata=dict(metadata))


def validate_documents(
    collection: object,
    documents: object,
    *,
    max_documents: int,
    max_text_chars: int,
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES,
    lines: Sequence[int] | None = None,
) -> list[Document]:
    """Every document checked; on any violation one `InvalidInput` lists them all.

    Problems name each document as ``documents[i]``; with ``lines`` (the line of a file each
    document came from, as the CLI reads them) they start with ``line N: documents[i]``."""
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

    def name(i: int) -> str:
        if lines is not None and i < len(lines):
            return f"line {lines[i]}: documents[{i}]"
        return f"documents[{i}]"

    checked: list[Document] = []
    first_seen: dict[str, int] = {}
    for i, raw in enumerate(documents):
        doc = _check_one(name(i), raw, max_text_chars, max_metadata_bytes, problems)
        if doc is None:
            continue
        if doc.id in first_seen:
            first = first_seen[doc.id]
            where = f" (line {lines[first]})" if lines is not None and first < len(lines) else ""
            problems.append(
                f"{name(i)}.id: {_shown(doc.id)} duplicates documents[{first}].id{where}"
            )
        else:
            first_seen[doc.id] = i
        checked.append(doc)
    if problems:
        raise InvalidInput(problems, field="documents")
    return checked


# ---- strict JSON, as the CLI reads it --------------------------------------------------------
_MAX_INTEGER_DIGITS = 20  # beyond 2**64: refused while parsing, before Python builds a bignum


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as infinity, which JSON cannot carry back
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INTEGER_DIGITS:
        raise ValueError(
            f"an integer with {len(text.lstrip('-'))} digits is out of range "
            f"(integers must be within ±{MAX_SAFE_INTEGER}; send larger ones as strings)"
        )
    return int(text)


def parse_json(text: str) -> Any:
    """One JSON value, strictly: no NaN/Infinity, finite floats, integers of at most 20 digits.

    Raises ValueError with a message fit for a user ("Expecting value (column 3)"); never
    RecursionError, whatever the nesting."""
    try:
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
        )
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
