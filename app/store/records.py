"""What the store reads and writes: point, hit, collection and context records, and point ids.

Plain frozen dataclasses, so use cases never see qdrant-client types.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from app.names import META_COLLECTION

# Fixed forever: changing it would change every point id and duplicate every stored document.
POINT_NAMESPACE = uuid.UUID("4ca45e13-282a-4774-929a-03d1b2e7179f")

__all__ = [
    "META_COLLECTION",
    "POINT_NAMESPACE",
    "CollectionInfo",
    "ContextRecord",
    "ContextSource",
    "Hit",
    "PointRecord",
    "RebuildMarker",
    "point_id",
]


class ContextSource(StrEnum):
    """Where the texts of a context came from; the value is what the meta payload stores."""

    CORPUS = "corpus"  # sampled from the collection's own documents
    EXPLICIT = "explicit"  # texts given when the collection was created
    GENERIC = "generic"  # the model's generic texts (the collection had none or too few)
    REBUILD = "rebuild"  # a new context for a collection that already has one


def point_id(collection: str, document_id: str) -> str:
    """The point id of a document: the same (collection, document id) always gives the same UUID.

    Collection names cannot contain NUL, so the NUL separator makes the pair unambiguous.
    """
    return str(uuid.uuid5(POINT_NAMESPACE, f"{collection}\x00{document_id}"))


@dataclass(frozen=True)
class PointRecord:
    """One embedded document, ready to upsert."""

    document_id: str
    vector: Sequence[float] | np.ndarray
    text: str | None
    metadata: dict[str, Any]
    content_hash: str
    context_version: int
    model_fingerprint: str = ""  # the writing model's weights fingerprint ("" = not stamped)


@dataclass(frozen=True)
class Hit:
    """One search result; ``payload`` is the user-facing payload (no store bookkeeping)."""

    document_id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class CollectionInfo:
    """A user collection: its alias name, the physical collection behind it and its size."""

    name: str
    physical: str
    points: int
    context_version: int | None


# eq=False: the generated __eq__ would compare numpy arrays with ``==`` and raise on truth value.
@dataclass(frozen=True, eq=False)
class ContextRecord:
    """A versioned context of one collection: its dataset embeddings (stage-1 output) and provenance."""

    collection: str
    version: int
    dataset_embeddings: np.ndarray  # (N, D) float32, as produced by stage 1, not normalized
    sampled_ids: list[str]
    model_id: str
    created_at: float
    state: str = "ready"
    source: ContextSource = ContextSource.CORPUS
    # Documents the context was sampled from (a first job's size, or the collection's size at a
    # rebuild); 0 for generic and explicit contexts. `growth` compares the collection with it.
    points_at_build: int = 0
    fingerprint: str = ""  # the model's weights fingerprint ("" in contexts saved before it)
    trigger: str = (
        ""  # what asked for it: "first-ingest", "create", "manual", "auto-generic", "auto-growth"
    )


@dataclass(frozen=True)
class RebuildMarker:
    """A rebuild in progress: while it exists, writes to the collection also reach ``target``."""

    collection: str
    job_id: str
    from_version: int
    target_version: int
    trigger: str
    started_at: float
    seed: int = 0
    source: str = "rebuild"  # the new context's source: "rebuild", or "explicit" for given texts
