"""What the store reads and writes: point, hit, collection and context records, and point ids.

Plain frozen dataclasses, so use cases never see qdrant-client types.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from app.bm25 import Bm25Stats, SparseVector
from app.names import META_COLLECTION

# Fixed forever: changing it would change every point id and duplicate every stored document.
POINT_NAMESPACE = uuid.UUID("4ca45e13-282a-4774-929a-03d1b2e7179f")
# Chunks after the first: a namespace of their own, so no (document id, index) pair can give
# the id of another document's chunk 0. Fixed forever, like POINT_NAMESPACE.
CHUNK_NAMESPACE = uuid.UUID("b7c1d0a2-5e0f-4f36-9d53-6a1f3c2e8b41")

__all__ = [
    "CHUNK_NAMESPACE",
    "META_COLLECTION",
    "POINT_NAMESPACE",
    "Bm25Stats",
    "CollectionInfo",
    "ContextRecord",
    "ContextSource",
    "Hit",
    "PointRecord",
    "RebuildMarker",
    "SparseVector",
    "chunk_point_id",
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


def chunk_point_id(collection: str, document_id: str, chunk_index: int) -> str:
    """The point id of chunk ``chunk_index`` of a document; chunk 0 keeps `point_id`, so a
    document of one chunk is exactly the point it always was.

    Neither the collection name nor the decimal index contains NUL, so the string splits back
    into (collection, index, document id) in one way only."""
    if chunk_index == 0:
        return point_id(collection, document_id)
    return str(uuid.uuid5(CHUNK_NAMESPACE, f"{collection}\x00{chunk_index}\x00{document_id}"))


@dataclass(frozen=True)
class PointRecord:
    """One embedded chunk of a document (a short document is its one chunk), ready to upsert.

    ``text`` is the chunk's text, characters ``[char_start, char_end)`` of the document's
    (``char_end`` None: ``char_start + len(text)``); ``metadata`` and ``content_hash`` are the
    document's."""

    document_id: str
    vector: Sequence[float] | np.ndarray
    text: str | None
    metadata: dict[str, Any]
    content_hash: str
    context_version: int
    # Keyword-only: several branches of work added fields here; positions would mix them up.
    _: KW_ONLY
    chunk_index: int = 0
    chunk_count: int = 1
    char_start: int = 0
    char_end: int | None = None
    # The BM25 vector of the same text (None: no sparse vector is written for this point) and
    # how many terms that text had (kept in the payload, so a rebuild can carry both over).
    sparse: SparseVector | None = None
    sparse_terms: int = 0
    model_fingerprint: str = ""  # the writing model's weights fingerprint ("" = not stamped)


@dataclass(frozen=True)
class Hit:
    """One search result; ``payload`` is the user-facing payload (no store bookkeeping).

    A grouped search gives one hit per document: its best chunk, whose text is
    ``payload["text"]`` (characters ``[char_start, char_end)`` of the document). Points
    stored before chunking read as chunk 0 of 1."""

    document_id: str
    score: float
    payload: dict[str, Any]
    chunk_index: int = 0
    chunk_count: int = 1
    char_start: int = 0
    char_end: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The hit as JSON: id, score, metadata and the best chunk (text and offsets), and the
        whole user payload as before."""
        return {
            "id": self.document_id,
            "score": self.score,
            "payload": self.payload,
            "metadata": self.payload.get("metadata", {}),
            "text": self.payload.get("text"),
            "chunk_index": self.chunk_index,
            "chunk_count": self.chunk_count,
            "char_start": self.char_start,
            "char_end": self.char_end,
        }


@dataclass(frozen=True)
class CollectionInfo:
    """A user collection: its alias name, the physical collection behind it and its size."""

    name: str
    physical: str
    points: int
    context_version: int | None
    documents: int | None = None  # distinct documents (points counts chunks); None: not counted
    sparse: bool = False  # whether its physical collection has the `bm25` sparse vectors


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
    # Distinct chunks among the sampled texts (a document may give several, up to
    # CDEQ_CONTEXT__MAX_CHUNKS_PER_DOCUMENT); 0 in contexts saved before chunking.
    sampled_chunks: int = 0


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
