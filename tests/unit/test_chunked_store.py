"""Chunked documents in the store: point ids, grouped search, trims, deletes, legacy points."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import numpy as np
import pytest
from qdrant_client import models

from app.errors import InvalidInput
from app.store import QdrantStore, chunk_point_id, point_id
from app.store.records import CHUNK_NAMESPACE, PointRecord
from tests.unit.test_store import E, live

TEXT = "aaaa bbbb cccc dddd"  # chunks: [0, 9) "aaaa bbbb", [5, 14) "bbbb cccc", [10, 19)


def chunk(
    doc: str, index: int, count: int, vector: object, *, version: int = 1, h: str = "h"
) -> PointRecord:
    start, end = [(0, 9), (5, 14), (10, 19), (15, 19)][index]
    return PointRecord(
        document_id=doc,
        vector=np.asarray(vector, dtype=np.float32),
        text=TEXT[start:end],
        metadata={"doc": doc},
        content_hash=f"{h}-{doc}",
        context_version=version,
        chunk_index=index,
        chunk_count=count,
        char_start=start,
        char_end=end if index < count - 1 else len(TEXT),
    )


def near(i: int, j: int, w: float) -> np.ndarray:
    v = E[i] * (1 - w) + E[j] * w
    return v / np.linalg.norm(v)


def three_chunk_doc(doc: str, vectors: list[np.ndarray], version: int = 1) -> list[PointRecord]:
    return [chunk(doc, i, 3, v, version=version) for i, v in enumerate(vectors)]


def test_chunk_zero_keeps_the_document_point_id_and_the_others_are_distinct() -> None:
    assert chunk_point_id("c", "d", 0) == point_id("c", "d")
    ids = {chunk_point_id("c", "d", i) for i in range(50)}
    assert len(ids) == 50
    assert chunk_point_id("c", "d", 1) == str(uuid.uuid5(CHUNK_NAMESPACE, "c\x001\x00d"))
    # a document id that looks like another document's chunk never shares an id with it
    assert chunk_point_id("c", "d\x001", 0) != chunk_point_id("c", "d", 1)


def test_grouped_search_gives_one_hit_per_document_with_its_best_chunk(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    name = uniq("docs")
    physical = live(store, name)
    # "long" has three chunks all close to E[0]; "other" and "third" one chunk each.
    store.upsert(physical, three_chunk_doc("long", [near(0, 1, w) for w in (0.3, 0.1, 0.2)]))
    store.upsert(physical, [chunk("other", 0, 1, near(0, 2, 0.5))])
    store.upsert(physical, [chunk("third", 0, 1, E[3])])
    query = E[0]
    hits = store.search(name, query, top_k=2)
    assert [h.document_id for h in hits] == ["long", "other"]
    best = hits[0]
    assert (best.chunk_index, best.chunk_count, best.char_start, best.char_end) == (1, 3, 5, 14)
    assert best.payload["text"] == TEXT[5:14]
    assert best.payload["metadata"] == {"doc": "long"}
    raw = store.search(name, query, top_k=4, group=False)
    assert [(h.document_id, h.chunk_index) for h in raw] == [
        ("long", 1),
        ("long", 2),
        ("long", 0),
        ("other", 0),
    ]
    # filters keep working in both shapes
    only = store.search(name, query, top_k=5, filter={"metadata.doc": "other"})
    assert [h.document_id for h in only] == ["other"]


def test_top_k_counts_distinct_documents(store: QdrantStore, uniq: Callable[[str], str]) -> None:
    name = uniq("docs")
    physical = live(store, name)
    for d in range(8):
        store.upsert(
            physical, three_chunk_doc(f"d{d}", [near(0, 1, 0.01 * d + w) for w in (0, 0.3, 0.6)])
        )
    hits = store.search(name, E[0], top_k=5)
    assert len(hits) == 5 and len({h.document_id for h in hits}) == 5
    assert [h.document_id for h in hits] == [f"d{d}" for d in range(5)]


def test_trimming_removes_only_chunks_beyond_the_new_count(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    name = uniq("docs")
    physical = live(store, name)
    store.upsert(physical, three_chunk_doc("a", [E[0], E[1], E[2]]))
    store.upsert(physical, three_chunk_doc("b", [E[0], E[1], E[2]]))
    store.upsert(physical, [chunk("a", 0, 1, E[3])])  # "a" re-ingested as one chunk
    store.delete_stale_chunks(physical, {"a": 1})
    assert store.count(name) == 4
    assert store.count_documents(name) == 2
    stored = {
        (d.document_id, d.chunk_index)
        for d in store.fetch_stored(
            physical, [chunk_point_id(name, doc, i) for doc in "ab" for i in range(3)]
        )
    }
    assert stored == {("a", 0), ("b", 0), ("b", 1), ("b", 2)}
    with pytest.raises(InvalidInput, match="physical collection"):
        store.delete_stale_chunks(name, {"a": 1})


def test_delete_removes_every_chunk_in_every_physical_version(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    name = uniq("docs")
    v1 = live(store, name)
    v2 = store.ensure_physical(name, 2)  # a rebuild in progress
    store.upsert(v1, three_chunk_doc("a", [E[0], E[1], E[2]]))
    store.upsert(v2, three_chunk_doc("a", [E[0], E[1], E[2]], version=2))
    store.upsert(v1, [chunk("b", 0, 1, E[3])])
    assert store.delete_documents(name, ["a"]) == 1  # one document existed
    assert store.count_physical(v1) == 1
    assert store.count_physical(v2) == 0


def test_points_without_chunk_fields_read_as_chunk_zero_of_one(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    name = uniq("docs")
    physical = live(store, name)
    store.client.upsert(  # a point as cdeq wrote it before chunking
        physical,
        points=[
            models.PointStruct(
                id=point_id(name, "old"),
                vector=E[0].tolist(),
                payload={
                    "document_id": "old",
                    "text": "old text",
                    "metadata": {},
                    "content_hash": "h",
                    "context_version": 1,
                    "collection": name,
                },
            )
        ],
    )
    (hit,) = store.search(name, E[0])
    assert (hit.chunk_index, hit.chunk_count, hit.char_start, hit.char_end) == (0, 1, 0, 8)
    assert store.count_documents(name) == 1
    (doc,) = store.fetch_stored(physical, [point_id(name, "old")])
    assert (doc.chunk_index, doc.chunk_count, doc.char_start) == (0, 1, 0)
    # the catch-up's version key of a legacy point equals that of its rewrite as chunk 0 of 1
    before = store.point_hashes(physical)
    store.upsert(physical, [PointRecord("old", E[0], "old text", {}, "h", 1)])
    assert store.point_hashes(physical) == before
    store.delete_stale_chunks(physical, {"old": 1})  # nothing beyond chunk 0: nothing goes
    assert store.count(name) == 1


def test_get_documents_joins_the_chunks_back_into_the_whole_text(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    name = uniq("docs")
    physical = live(store, name)
    store.upsert(physical, three_chunk_doc("a", [E[0], E[1], E[2]]))
    found = store.get_documents(name, ["a"])
    assert found["a"]["text"] == TEXT
    assert found["a"]["chunk_count"] == 3 and found["a"]["char_end"] == len(TEXT)


def test_bad_chunk_fields_are_refused(store: QdrantStore, uniq: Callable[[str], str]) -> None:
    physical = live(store, uniq("docs"))
    bad = PointRecord("a", E[0], "t", {}, "h", 1, chunk_index=3, chunk_count=3)
    with pytest.raises(InvalidInput, match=r"chunk_index 3 is not in \[0, 3\)"):
        store.upsert(physical, [bad])
    with pytest.raises(InvalidInput, match="char range"):
        store.upsert(physical, [PointRecord("a", E[0], "t", {}, "h", 1, char_start=5, char_end=2)])


def test_grouped_search_equals_qdrants_group_by_when_one_document_fills_the_top(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    """Local mode groups by over-fetching (Qdrant's local group-by scans every point in
    Python); on any backend the answer is Qdrant's group-by's."""
    name = uniq("docs")
    physical = live(store, name)
    rng = np.random.default_rng(0)

    def unit(v: np.ndarray) -> np.ndarray:
        return (v / np.linalg.norm(v)).astype(np.float32)

    records = [  # 150 chunks of one document all nearer the query than anything else
        PointRecord(
            "big",
            unit(E[0] * 4 + rng.normal(0, 0.1, 4)),
            "t",
            {},
            "h",
            1,
            chunk_index=i,
            chunk_count=150,
        )
        for i in range(150)
    ]
    for d in range(30):
        count = int(rng.integers(1, 6))
        records += [
            PointRecord(
                f"d{d}",
                unit(rng.normal(0, 1, 4)),
                "t",
                {},
                "h",
                1,
                chunk_index=i,
                chunk_count=count,
            )
            for i in range(count)
        ]
    store.upsert(physical, records)
    for k in (1, 5, 12, 40):
        ours = store.search(name, E[0], top_k=k)
        groups = store.client.query_points_groups(
            physical, query=E[0].tolist(), group_by="document_id", group_size=1, limit=k
        ).groups
        assert [(h.document_id, h.chunk_index) for h in ours] == [
            (str(g.id), (g.hits[0].payload or {})["chunk_index"]) for g in groups
        ]
        assert [h.score for h in ours] == pytest.approx([g.hits[0].score for g in groups])
    assert len(store.search(name, E[0], top_k=40)) == 31  # every document, then no more
