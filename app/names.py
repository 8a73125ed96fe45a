"""Names cdeq gives things in Qdrant: the collection-name rule and the physical-collection format.

A user collection ``NAME`` is an alias onto the physical collection ``NAME__c<version>`` that
holds the vectors embedded with context ``version``. This module is the only place that
builds or parses that format, and the only place that states which names a user may choose.
"""

from __future__ import annotations

import re

from app.errors import InvalidInput

# Safe in URLs, file names and Qdrant; never shaped like a physical name or the meta collection.
COLLECTION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
META_COLLECTION = "cdeq_meta"
_PHYSICAL = re.compile(r"(?P<name>.+)__c(?P<version>[1-9][0-9]*)")
_RESERVED = re.compile(r"__c[0-9]+$")

NAME_RULE = (
    "1-63 characters, lower-case letters, digits, '_' or '-', starting with a letter or digit"
)


def _shown(name: object) -> str:
    if isinstance(name, str) and len(name) > 80:
        return repr(name[:80] + "…")
    return repr(name)


def check_collection_name(name: object, field_name: str = "collection") -> str:
    """``name`` if a user may name a collection so; else InvalidInput naming the field and rule."""
    if isinstance(name, str) and COLLECTION_NAME.fullmatch(name) and is_reserved(name):
        raise InvalidInput(
            f"{field_name}: {name!r} is reserved (names ending in '__c<number>' and "
            f"{META_COLLECTION!r} are cdeq's own)",
            field=field_name,
        )
    if not isinstance(name, str) or not COLLECTION_NAME.fullmatch(name):
        raise InvalidInput(
            f"{field_name}: {_shown(name)} is not a valid collection name: use {NAME_RULE}",
            field=field_name,
        )
    return name


def is_reserved(name: str) -> bool:
    """Names cdeq keeps for itself: physical collections and the meta collection."""
    return bool(_RESERVED.search(name)) or name == META_COLLECTION


def is_collection_name(name: object) -> bool:
    """True when ``name`` passes `check_collection_name` (for reads that answer NotFound)."""
    return isinstance(name, str) and bool(COLLECTION_NAME.fullmatch(name)) and not is_reserved(name)


def physical_name(collection: str, version: int) -> str:
    """``NAME__c<version>`` for a valid collection name and a version ≥ 1."""
    check_collection_name(collection)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInput(f"context version must be an int >= 1, got {version!r}", field="version")
    return f"{collection}__c{version}"


def parse_physical(physical: str) -> tuple[str, int] | None:
    """(collection, context version) of a physical name ``NAME__c<version>``, else None."""
    match = _PHYSICAL.fullmatch(physical)
    if match is None:
        return None
    return match["name"], int(match["version"])
