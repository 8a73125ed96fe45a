"""Long documents end to end in in-process mode: chunked ingest, document-level search,
re-ingest and delete, rebuilds and context samples. Real tokenizer, tiny model, local Qdrant.

A random-weights model only matches near-identical text, so a passage is searched for with
the text of the chunk that holds it, under a small chunk budget."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.errors import InvalidInput
from app.ingest import ingest_documents
from app.lifecycle import context_info, rebuild_context
from app.model import CdeEmbedder
from app.query import delete_documents, list_collections, search
from app.rebuild import sample_documents
from app.service import Cdeq
from app.store import chunk_point_id
from tests.helpers.builders import make_settings
from tests.helpers.texts import topical_texts

BUDGET, OVERLAP = 64, 8


def long_documents(n: int, sections: int = 20, seed: int = 0) -> list[dict[str, object]]:
    """`n` documents of `sections` paragraphs, each paragraph with its own topic vocabulary:
    what a document says at its end is not what it says at its start."""
    texts = topical_texts(n * sections, seed=seed, min_words=40, max_words=60)
    return [
        {
            "id": f"long-{d}",
            "text": "\n\n".join(texts[d * sections : (d + 1) * sections]),
            "metadata": {"d": d},
        }
        for d in range(n)
    ]


def service(model_dir: Path, path: Path, embedder: CdeEmbedder, **ingest: object) -> Cdeq:
    settings = make_settings(model_dir, path, **ingest)
    return Cdeq(settings, embedder=embedder)


@pytest.fixture()
def svc(tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path) -> Iterator[Cdeq]:
    s = service(
        tiny_model_dir,
        tmp_path / "qdrant",
        embedder,
        chunk_tokens=BUDGET,
        chunk_overlap_tokens=OVERLAP,
    )
    yield s
    s.close()


def chunk_holding(svc: Cdeq, text: str, at: int) -> tuple[int, str]:
    """The index and text of the chunk (as ingest makes them) that holds character `at`."""
    plan = svc.embedder.chunk(text, budget=BUDGET, overlap=OVERLAP)
    for index, span in enumerate(plan.spans):
        if span.start <= at < span.end and (
            index + 1 == len(plan.spans) or plan.spans[index + 1].start > at
        ):
            return index, text[span.start : span.end]
    raise AssertionError(f"no chunk holds character {at}")


def passages(svc: Cdeq, docs: list[dict[str, object]]) -> list[tuple[str, int, str]]:
    """(document id, chunk index, chunk text) of a passage in the last quarter of each."""
    found = []
    for doc in docs:
        text = str(doc["text"])
        index, chunk = chunk_holding(svc, text, len(text) * 7 // 8)
        found.append((str(doc["id"]), index, chunk))
    return found


def test_a_passage_from_the_last_quarter_finds_its_document_only_with_chunking(
    svc: Cdeq, tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    docs = long_documents(10)
    # the last quarter lies beyond the 512-token window
    assert all(svc.embedder.count_tokens(str(d["text"])) * 3 // 4 > 600 for d in docs)
    status = ingest_documents("long", docs, service=svc)
    assert (status.state, status.succeeded, status.truncated) == ("done", 10, 0)
    assert status.chunks == svc.store.count("long") > 10 * 10
    for doc_id, index, chunk in passages(svc, docs):
        (top,) = search("long", chunk, top_k=1, service=svc)
        assert (top.document_id, top.chunk_index) == (doc_id, index)
        assert top.payload["text"] == chunk
        text = str(next(d["text"] for d in docs if d["id"] == doc_id))
        assert text[top.char_start : top.char_end] == chunk
        plan = svc.embedder.chunk(text, budget=BUDGET, overlap=OVERLAP)
        assert top.chunk_count == len(plan.spans) > index

    off = service(tiny_model_dir, tmp_path / "off", embedder, chunking="off")
    try:
        status = ingest_documents("long", docs, service=off)
        assert (status.truncated, status.chunks) == (10, 10)
        assert set(status.warnings) == {d["id"] for d in docs}
        found = sum(
            search("long", chunk, top_k=1, service=off)[0].document_id == doc_id
            for doc_id, _, chunk in passages(svc, docs)
        )
        assert found < 5  # the ends were never embedded: what is found is chance
    finally:
        off.close()


def test_top_k_counts_documents_and_group_false_gives_chunks(svc: Cdeq) -> None:
    docs = long_documents(8, sections=4, seed=1)
    ingest_documents("many", docs, service=svc)
    query = str(docs[3]["text"])[:200]
    hits = search("many", query, top_k=5, service=svc)
    assert len(hits) == 5 and len({h.document_id for h in hits}) == 5
    chunks = search("many", query, top_k=20, group=False, service=svc)
    assert len(chunks) == 20
    per_document = Counter(h.document_id for h in chunks)
    assert max(per_document.values()) > 1  # several chunks of one document
    only = search("many", query, top_k=5, filter={"metadata.d": 6}, service=svc)
    assert [h.document_id for h in only] == ["long-6"]
    with pytest.raises(InvalidInput, match="group"):
        search("many", query, group="yes", service=svc)  # type: ignore[arg-type]
    (info,) = [c for c in list_collections(service=svc) if c.name == "many"]
    assert (info.documents, info.points) == (8, svc.store.count("many"))
    assert info.points > info.documents


def test_reingesting_shorter_keeps_the_document_findable_and_leaves_no_stale_chunk(
    svc: Cdeq,
) -> None:
    docs = long_documents(4, seed=2)
    ingest_documents("re", docs, service=svc)
    long_count = svc.store.count("re")
    query = str(docs[0]["text"])[:300]
    stop = threading.Event()
    misses: list[list[str]] = []
    searches = [0]

    def keep_searching() -> None:
        while not stop.is_set():
            ids = [h.document_id for h in search("re", query, top_k=10, service=svc)]
            searches[0] += 1
            if "long-0" not in ids:
                misses.append(ids)

    searcher = threading.Thread(target=keep_searching)
    searcher.start()
    try:
        for round_ in range(3):
            short = {**docs[0], "text": str(docs[0]["text"])[: 400 + round_ * 50]}
            ingest_documents("re", [short], service=svc)
            ingest_documents("re", [docs[0]], service=svc)
        ingest_documents("re", [short], service=svc)
    finally:
        stop.set()
        searcher.join()
    assert searches[0] > 0 and misses == []
    new_count = svc.embedder.chunk(str(short["text"]), budget=BUDGET, overlap=OVERLAP).spans
    assert len(new_count) < 5
    physical = svc.store.resolve("re")
    assert physical is not None
    ids = [chunk_point_id("re", "long-0", i) for i in range(60)]
    stored = svc.store.fetch_stored(physical, ids)
    assert sorted(d.chunk_index for d in stored) == list(range(len(new_count)))
    assert all(d.chunk_count == len(new_count) for d in stored)
    assert svc.store.count("re") < long_count


def test_delete_removes_every_chunk(svc: Cdeq) -> None:
    docs = long_documents(3, seed=3)
    ingest_documents("del", docs, service=svc)
    assert delete_documents("del", ["long-1"], service=svc) == 1
    physical = svc.store.resolve("del")
    assert physical is not None
    left = {
        d.document_id
        for d in svc.store.fetch_stored(
            physical, [chunk_point_id("del", f"long-{d}", i) for d in range(3) for i in range(80)]
        )
    }
    assert left == {"long-0", "long-2"}
    assert svc.store.count_documents("del") == 2


def chunk_sets(svc: Cdeq, collection: str) -> dict[str, list[tuple[int, int, int, str | None]]]:
    physical = svc.store.resolve(collection)
    assert physical is not None
    stored = svc.store.fetch_stored(physical, sorted(svc.store.point_hashes(physical)))
    sets: dict[str, list[tuple[int, int, int, str | None]]] = {}
    for d in stored:
        sets.setdefault(d.document_id, []).append(
            (d.chunk_index, d.chunk_count, d.char_start, d.text)
        )
    return {k: sorted(v) for k, v in sets.items()}


def test_a_rebuild_keeps_every_documents_chunk_set_and_samples_chunks_capped(
    svc: Cdeq,
) -> None:
    docs = long_documents(6, seed=4)
    ingest_documents("rb", docs, service=svc)
    before = chunk_sets(svc, "rb")
    # a context sample from the chunks: at most CDEQ_CONTEXT__MAX_CHUNKS_PER_DOCUMENT each
    physical = svc.store.resolve("rb")
    assert physical is not None
    for cap in (1, 2, 3):
        svc.settings.context.max_chunks_per_document = cap
        sample = sample_documents(svc, physical, 512, seed=0)
        per_document = Counter(d["id"] for d in sample)
        assert set(per_document) == {d["id"] for d in docs}
        assert set(per_document.values()) == {cap}
    svc.settings.context.max_chunks_per_document = 2
    rebuild_context("rb", service=svc)
    assert svc.contexts.current("rb").version == 2
    assert chunk_sets(svc, "rb") == before
    info = context_info("rb", service=svc)
    assert (info.distinct_documents, info.sampled_chunks) == (6, 12)
    assert info.points_now == 6  # documents, not chunks, for the growth figure


def test_chunk_settings_are_checked_and_a_misfit_is_refused_before_anything_is_recorded(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    from app.config import load_settings

    with pytest.raises(InvalidInput, match="CDEQ_INGEST__CHUNKING") as err:
        load_settings(ingest={"chunking": "sometimes"})
    with pytest.raises(InvalidInput, match="must be at most half of CHUNK_TOKENS"):
        load_settings(ingest={"chunk_tokens": 100, "chunk_overlap_tokens": 60})
    with pytest.raises(InvalidInput, match="CDEQ_INGEST__CHUNK_TOKENS") as err:
        load_settings(ingest={"chunk_tokens": 8})
    with pytest.raises(InvalidInput, match="CDEQ_INGEST__MAX_CHUNKS_PER_DOCUMENT"):
        load_settings(ingest={"max_chunks_per_document": 0})
    with pytest.raises(InvalidInput, match="CDEQ_CONTEXT__MAX_CHUNKS_PER_DOCUMENT"):
        load_settings(context={"max_chunks_per_document": 513})
    assert load_settings().ingest.max_text_chars == 2_000_000
    # a budget the settings accept but this model's window cannot hold
    big = service(tiny_model_dir, tmp_path / "big", embedder, chunk_tokens=600)
    try:
        with pytest.raises(InvalidInput, match=r"CDEQ_INGEST__CHUNK_TOKENS.*from 1 to 501") as err:
            ingest_documents("big", long_documents(1), service=big)
        assert err.value.field == "settings"
        assert big.store.list_collections() == []  # refused before any job or context
    finally:
        big.close()


def test_the_chunk_cap_keeps_the_first_chunks_with_a_warning(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    capped = service(
        tiny_model_dir,
        tmp_path / "cap",
        embedder,
        chunk_tokens=BUDGET,
        chunk_overlap_tokens=OVERLAP,
        max_chunks_per_document=3,
    )
    try:
        docs = long_documents(2, seed=8)
        status = ingest_documents("cap", docs, service=capped)
        assert (status.state, status.succeeded, status.truncated, status.chunks) == (
            "done",
            2,
            2,
            6,
        )
        assert status.warnings["long-0"].startswith("truncated: only the first 3 chunks")
        assert "CDEQ_INGEST__MAX_CHUNKS_PER_DOCUMENT" in status.warnings["long-0"]
    finally:
        capped.close()


def test_a_rewrite_that_died_part_way_is_trimmed_in_full_when_it_runs_again(svc: Cdeq) -> None:
    """Chunk 0 is written last, after the trim: a write that dies before it leaves chunk 0
    recording the old count, so running the write again removes every stale chunk (local
    mode trims by those ids, not by a filter walking every point)."""
    from app.rebuild import write_points
    from app.store import PointRecord

    ingest_documents("crash", long_documents(2, seed=13), service=svc)  # a context, a version
    physical = svc.store.resolve("crash")
    assert physical is not None
    version = svc.contexts.current("crash").version
    vector = [1.0] + [0.0] * (svc.store.dim - 1)

    def version_of(count: int) -> list[PointRecord]:
        return [
            PointRecord(
                "x",
                vector,
                f"chunk {i}",
                {},
                f"h{count}",
                version,
                chunk_index=i,
                chunk_count=count,
                char_start=i,
                char_end=i + 1,
            )
            for i in range(count)
        ]

    def stored() -> list[tuple[int, int]]:
        ids = [chunk_point_id("crash", "x", i) for i in range(10)]
        return sorted((d.chunk_index, d.chunk_count) for d in svc.store.fetch_stored(physical, ids))

    write_points(svc, physical, version_of(6), trim=True)
    assert stored() == [(i, 6) for i in range(6)]
    svc.store.upsert(physical, version_of(2)[1:])  # the shorter rewrite dies after its chunk 1
    assert svc.store.chunk_counts(physical, ["x"]) == {"x": 6}
    write_points(svc, physical, version_of(2), trim=True)  # ... and runs again
    assert stored() == [(0, 2), (1, 2)]
    write_points(svc, physical, version_of(4), trim=True)  # longer again: nothing to trim
    assert stored() == [(i, 4) for i in range(4)]


@pytest.mark.parametrize("mode", ["sparse", "hybrid"])
def test_sparse_and_hybrid_search_documents_by_their_best_chunk(svc: Cdeq, mode: str) -> None:
    """BM25 vectors are per chunk, and the sparse and hybrid modes group by document like dense:
    a code that only the last quarter of one long document holds finds that document first,
    naming the chunk that holds it, and `top_k` counts distinct documents."""
    docs = long_documents(6, seed=11)
    text = str(docs[3]["text"])
    at = len(text) * 7 // 8
    cut = text.index(" ", at)
    docs[3]["text"] = text[:cut] + " ZQX-4471-K" + text[cut:]
    ingest_documents("long-hybrid", docs, service=svc)
    index, chunk = chunk_holding(svc, str(docs[3]["text"]), cut + 1)
    assert index > 0 and "ZQX-4471-K" in chunk
    query = f"ZQX-4471-K {chunk}" if mode == "hybrid" else "ZQX-4471-K"
    hits = search("long-hybrid", query, top_k=5, mode=mode, service=svc)
    assert hits[0].document_id == "long-3"
    assert hits[0].chunk_index == index and "ZQX-4471-K" in hits[0].payload["text"]
    assert len({h.document_id for h in hits}) == len(hits)
    chunks = search("long-hybrid", query, top_k=5, mode=mode, group=False, service=svc)
    assert chunks[0].document_id == "long-3" and chunks[0].chunk_index == index
    if mode == "hybrid":  # the dense list brings in other chunks; BM25 only those with a term
        assert len(chunks) == 5 and len(hits) == 5
