"""What the client returns: plain dataclasses read from cdeq's JSON answers. Each keeps the
whole answer in `raw`, so fields a newer server adds are not lost."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

InputType = Literal["query", "document"]

FINAL_STATES = frozenset({"done", "done_with_errors", "failed"})


@dataclass(frozen=True)
class Document:
    """A document to ingest: its id (unique in the collection), text and optional metadata."""

    id: str
    text: str
    metadata: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "text": self.text}
        if self.metadata is not None:
            body["metadata"] = dict(self.metadata)
        return body


@dataclass(frozen=True)
class Job:
    """An ingest or rebuild job. With a queue, `ingest` returns it queued (only `id` and
    `collection` known); `job`/`wait` read its progress."""

    id: str
    collection: str
    state: str
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    truncated: int = 0
    batches: int = 0
    batches_done: int = 0
    created_at: float | None = None
    updated_at: float | None = None
    errors: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    request_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def ok(self) -> bool:
        """Finished with every document stored."""
        return self.state == "done"

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Job:
        return cls(
            id=str(body["id"]),
            collection=str(body.get("collection", "")),
            state=str(body.get("state", "queued")),
            total=int(body.get("total", 0)),
            succeeded=int(body.get("succeeded", 0)),
            failed=int(body.get("failed", 0)),
            truncated=int(body.get("truncated", 0)),
            batches=int(body.get("batches", 0)),
            batches_done=int(body.get("batches_done", 0)),
            created_at=body.get("created_at"),
            updated_at=body.get("updated_at"),
            errors=dict(body.get("errors") or {}),
            warnings=dict(body.get("warnings") or {}),
            reason=str(body.get("reason", "")),
            request_id=body.get("request_id"),
            raw=dict(body),
        )


@dataclass(frozen=True)
class Hit:
    """One search result: the document id, its score (dot product of unit vectors) and payload
    (text and metadata)."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def text(self) -> str | None:
        value = self.payload.get("text")
        return value if isinstance(value, str) else None

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Hit:
        return cls(
            id=str(body["id"]),
            score=float(body["score"]),
            payload=dict(body.get("payload") or {}),
            raw=dict(body),
        )


@dataclass(frozen=True)
class SearchResults:
    """The hits of a search, best first; iterate it like a list. `raw` holds the whole answer
    (options such as a search mode or grouping may add fields to it)."""

    hits: list[Hit]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, index: int) -> Hit:
        return self.hits[index]

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> SearchResults:
        results = body.get("results")
        hits = [Hit.from_dict(r) for r in results] if isinstance(results, list) else []
        return cls(hits=hits, raw=dict(body))


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    points: int
    context_version: int | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> CollectionInfo:
        version = body.get("context_version")
        return cls(
            name=str(body["name"]),
            points=int(body.get("points", 0)),
            context_version=int(version) if version is not None else None,
            raw=dict(body),
        )


@dataclass(frozen=True)
class ContextInfo:
    """A collection's live context (`cdeq context show`): version, source, growth, drift."""

    collection: str
    version: int
    source: str = ""
    trigger: str = ""
    model_id: str = ""
    built_at: float | None = None
    points_at_build: int = 0
    points_now: int = 0
    growth: float = 0.0
    drift: float | None = None
    previous_versions: list[int] = field(default_factory=list)
    rebuild: dict[str, Any] | None = None
    auto_rebuild_due: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> ContextInfo:
        return cls(
            collection=str(body["collection"]),
            version=int(body["version"]),
            source=str(body.get("source", "")),
            trigger=str(body.get("trigger", "")),
            model_id=str(body.get("model_id", "")),
            built_at=body.get("built_at"),
            points_at_build=int(body.get("points_at_build", 0)),
            points_now=int(body.get("points_now", 0)),
            growth=float(body.get("growth", 0.0)),
            drift=body.get("drift"),
            previous_versions=list(body.get("previous_versions") or []),
            rebuild=body.get("rebuild"),
            auto_rebuild_due=body.get("auto_rebuild_due"),
            raw=dict(body),
        )
