"""Turning the simple search filter dict ({"metadata.lang": "en", ...}) into a Qdrant filter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qdrant_client import models

from app.errors import InvalidInput

SearchFilter = Mapping[str, Any] | models.Filter


def build_filter(spec: SearchFilter | None) -> models.Filter | None:
    """Every key must match: a str/int/bool value matches exactly, a list matches any of its items.

    Keys are payload paths such as ``"metadata.lang"`` or ``"document_id"``. A ``models.Filter``
    passes through unchanged. Every bad entry is reported at once.
    """
    if spec is None or isinstance(spec, models.Filter):
        return spec
    if not isinstance(spec, Mapping):
        raise InvalidInput(
            f"filter must be a dict of payload key to value, got {type(spec).__name__}"
        )
    conditions: list[models.Condition] = []
    problems: list[str] = []
    for key, value in spec.items():
        if not isinstance(key, str) or not key:
            problems.append(f"filter key {key!r} must be a non-empty string")
            continue
        match = _match(value)
        if match is None:
            problems.append(
                f"filter {key!r}: value {value!r} must be a str, int or bool, "
                "or a non-empty list of all str or all int"
            )
            continue
        conditions.append(models.FieldCondition(key=key, match=match))
    if problems:
        raise InvalidInput(problems, field="filter")
    return models.Filter(must=conditions) if conditions else None


def _match(value: Any) -> models.Match | None:
    # bool before int: bool is an int, and MatchValue keeps the two apart.
    if isinstance(value, bool | str) or (isinstance(value, int) and not isinstance(value, bool)):
        return models.MatchValue(value=value)
    if isinstance(value, list | tuple) and value:
        if all(isinstance(item, str) for item in value):
            return models.MatchAny(any=list(value))
        if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return models.MatchAny(any=list(value))
    return None
