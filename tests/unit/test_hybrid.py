"""Hybrid search (#18): BM25 sparse vectors beside the dense ones, in-process mode, real tiny
model (v1 and v2), real tokenizer, real Qdrant local mode. Scores are checked against BM25 and
the fusions computed here, independently of Qdrant."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import models

from app.bm25 import Bm25Stats, Bm25Terms, SparseVector, document_vector, query_vector
from app.config import Settings, load_settings
from app.errors import Conflict, InvalidInput
from app.ingest import ingest_documents
from app.lifecycle import context_info, rebuild_context
from app.model import CdeEmbedder
from app.model.tiny import make_checkpoint
from app.query import SEARCH_MODES, search
from app.service import Cdeq
from app.store import QdrantStore, Ranking, point_id
from app.store.points import query_kwargs
from tests.helpers.builders import documents, make_settings
from tests.helpers.texts import topical_texts

K1, B = 1.2, 0.75


def service(model_dir: Path, qdrant: Path, embedder: CdeEmbedder, **search: object) -> Cdeq:
    settings = make_settings(model_dir, qdrant, batch_size=256)
    settings = settings.model_copy(update={"search": settings.search.model_copy(update=search)})
    return Cdeq(settings, embedder=embedder)


@pytest.fixture()
def svc(tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path) -> Iterator[Cdeq]:
    s = service(tiny_model_dir, tmp_path / "qdrant", embedder)
    yield s
    s.close()


def sparse_of(svc: Cdeq, collection: str) -> dict[str, tuple[tuple[int, ...], tuple[float, ...]]]:
    """document id → its stored BM25 vector, read straight from Qdrant."""
    physical = svc.store.resolve(collection)
    assert physical is not None
    records, _ = svc.store.client.scroll(
        physical, limit=10_000, with_payload=["document_id"], with_vectors=["bm25"]
    )
    out = {}
    for r in records:
        if not isinstance(r.vector, dict) or "bm25" not in r.vector:
            continue
        vector = r.vector["bm25"]
        out[str(r.payload["document_id"])] = (tuple(vector.indices), tuple(vector.values))  # type: ignore[index]
    return out


# ---- the pure core -------------------------------------------------------------------------
def test_bm25_weights_follow_the_formula(embedder: CdeEmbedder) -> None:
    v = document_vector([5, 7, 5, 9], average_length=2.0, k1=K1, b=B)
    norm = K1 * (1 - B + B * 4 / 2.0)
    assert v.indices == (5, 7, 9)
    assert v.values == pytest.approx([2 * 2.2 / (2 + norm), 2.2 / (1 + norm), 2.2 / (1 + norm)])
    assert query_vector([9, 5, 9]) == SparseVector((5, 9), (1.0, 1.0))
    assert Bm25Stats(3, 30).average_length(1, 10) == 10.0
    assert Bm25Stats().average_length() == 1.0
    with pytest.raises(ValueError, match="2 indices but 1 values"):
        SparseVector((1, 2), (1.0,))
    with pytest.raises(ValueError, match="term scheme must be one of"):
        Bm25Terms(embedder.tokenizer, "letters")  # type: ignore[arg-type]


def test_terms_are_lowercased_words_or_pieces_of_the_models_tokenizer(
    embedder: CdeEmbedder,
) -> None:
    words = Bm25Terms(embedder.tokenizer, "words")
    pieces = Bm25Terms(embedder.tokenizer, "pieces")
    (a, b) = words.terms(["Code ZQX-4471-K, code!", "code zqx 4471 k"])
    assert len(a) == 5 and Counter(a)[a[0]] == 2  # code, zqx, 4471, k, code: punctuation dropped
    assert set(a) == set(b) and len(b) == 4  # case and punctuation do not matter
    ids = embedder.tokenizer("code zqx", add_special_tokens=False)["input_ids"]
    assert pieces.terms(["CODE ZQX"]) == [ids]
    assert words.signature != pieces.signature and words.signature.startswith("words:")
    assert words.terms([""]) == [[]]


def test_search_settings_are_checked_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDEQ_SEARCH__FUSION", "max")
    monkeypatch.setenv("CDEQ_SEARCH__BM25_B", "1.5")
    with pytest.raises(InvalidInput, match="CDEQ_SEARCH__FUSION") as caught:
        load_settings()
    assert "CDEQ_SEARCH__BM25_B" in str(caught.value)
    monkeypatch.setenv("CDEQ_SEARCH__FUSION", "dbsf")
    monkeypatch.setenv("CDEQ_SEARCH__BM25_B", "0.5")
    assert load_settings().search.fusion == "dbsf"
    defaults = Settings.model_fields["search"].default_factory()  # type: ignore[misc]
    assert (defaults.sparse, defaults.mode, defaults.fusion) == (True, "dense", "rrf")


# ---- sparse scores are BM25 ----------------------------------------------------------------
def independent_bm25(doc_terms: dict[str, list[int]], query: list[int]) -> dict[str, float]:
    """BM25 with Qdrant's IDF, ln(1 + (N - n + 0.5) / (n + 0.5)), in numpy."""
    n_docs = len(doc_terms)
    avgdl = np.mean([len(t) for t in doc_terms.values()])
    df = Counter(t for terms in doc_terms.values() for t in set(terms))
    scores = {}
    for doc, terms in doc_terms.items():
        tf = Counter(terms)
        total = 0.0
        for term in set(query):
            if term in tf:
                idf = math.log(1 + (n_docs - df[term] + 0.5) / (df[term] + 0.5))
                sat = tf[term] * (K1 + 1) / (tf[term] + K1 * (1 - B + B * len(terms) / avgdl))
                total += idf * sat
        if total > 0:
            scores[doc] = total
    return scores


@pytest.mark.parametrize("family", ["v1", "v2"])
def test_sparse_scores_equal_bm25_computed_independently(
    family: str, tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    if family == "v2":
        model_dir = make_checkpoint(tmp_path / "v2", family="v2", seed=1)
        model = CdeEmbedder.from_pretrained(model_dir, device="cpu", dtype="float32")
    else:
        model_dir, model = tiny_model_dir, embedder
    svc = service(model_dir, tmp_path / "qdrant", model)
    try:
        docs = documents(200, seed=5)
        assert ingest_documents("bm", docs, service=svc).succeeded == 200
        terms = svc.bm25.terms([str(d["text"]) for d in docs])
        doc_terms = {str(d["id"]): t for d, t in zip(docs, terms, strict=True)}
        rng = random.Random(3)
        for _ in range(5):
            words = rng.choice(docs)["text"].split()
            query = " ".join(rng.sample(words, 3))
            want = independent_bm25(doc_terms, svc.bm25.terms([query])[0])
            hits = search("bm", query, top_k=20, mode="sparse", service=svc)
            assert len(hits) == min(20, len(want))
            for hit in hits:
                assert hit.score == pytest.approx(want[hit.document_id], abs=1e-4)
            best = sorted(want.values(), reverse=True)[: len(hits)]
            assert [h.score for h in hits] == pytest.approx(best, abs=1e-4)
    finally:
        svc.close()


# ---- rare codes ----------------------------------------------------------------------------
def rare_code(rng: random.Random) -> str:
    letters = "".join(rng.choice("BCDFGHJKLMNPQRSTVWXZ") for _ in range(3))
    return f"{letters}-{rng.randint(1000, 9999)}-{rng.choice('ABCDEFGHJK')}"


FUNCTION_WORDS = ["the", "of", "and", "to", "in", "is", "for", "with", "on", "as"]


def rare_code_corpus(seed: int = 7) -> tuple[list[dict[str, object]], dict[str, str]]:
    """500 topical documents written with function words, as text is; 20 of them carry one
    unique code each (document id → code)."""
    rng = random.Random(seed)
    texts = []
    for text in topical_texts(500, seed=seed):
        words = text.split()
        for _ in range(len(words) // 4):
            words.insert(rng.randint(0, len(words)), rng.choice(FUNCTION_WORDS))
        texts.append(" ".join(words))
    carriers = rng.sample(range(500), 20)
    codes: dict[str, str] = {}
    for i in carriers:
        code = rare_code(rng)
        words = texts[i].split()
        words.insert(rng.randint(0, len(words)), code)
        texts[i] = " ".join(words)
        codes[f"doc-{i}"] = code
    return [{"id": f"doc-{i}", "text": t} for i, t in enumerate(texts)], codes


def common_words(docs: list[dict[str, object]]) -> list[str]:
    """The 10 words found in the most documents."""
    counts = Counter(w for d in docs for w in set(str(d["text"]).split()))
    return [w for w, _ in counts.most_common(10)]


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "fusion"), [("sparse", "rrf"), ("hybrid", "dbsf")])
def test_a_rare_code_finds_its_document_first(
    mode: str, fusion: str, tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    svc = service(tiny_model_dir, tmp_path / "qdrant", embedder, fusion=fusion)
    try:
        docs, codes = rare_code_corpus()
        assert ingest_documents("codes", docs, service=svc).succeeded == 500
        rng = random.Random(11)
        common = common_words(docs)
        found = 0
        for doc_id, code in codes.items():
            query = " ".join([code, *rng.sample(common, 2)])
            hits = search("codes", query, top_k=5, mode=mode, service=svc)
            found += hits[0].document_id == doc_id
        assert found >= 19, f"{found} of 20 codes found at rank 1 with {mode}/{fusion}"
    finally:
        svc.close()


# ---- hybrid = the fusion of the two lists ---------------------------------------------------
def rrf(lists: list[list[tuple[str, float]]], k: int) -> dict[str, float]:
    scores: dict[str, float] = {}
    for ranked in lists:
        for rank, (doc, _) in enumerate(ranked):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return scores


def dbsf(lists: list[list[tuple[str, float]]]) -> dict[str, float]:
    """Each list's scores mapped from [mean - 3 sd, mean + 3 sd] (sample sd) to [0, 1], summed."""
    scores: dict[str, float] = {}
    for ranked in lists:
        values = np.array([s for _, s in ranked])
        mean, sd = values.mean(), values.std(ddof=1)
        for doc, s in ranked:
            scores[doc] = scores.get(doc, 0.0) + (s - (mean - 3 * sd)) / (6 * sd)
    return scores


@pytest.mark.parametrize(("fusion", "rrf_k"), [("rrf", 2), ("rrf", 7), ("dbsf", 2)])
def test_hybrid_ranks_are_the_fusion_of_dense_and_sparse(
    fusion: str, rrf_k: int, tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    prefetch = 15
    svc = service(
        tiny_model_dir,
        tmp_path / "qdrant",
        embedder,
        fusion=fusion,
        rrf_k=rrf_k,
        dense_prefetch=prefetch,
        sparse_prefetch=prefetch,
    )
    try:
        docs = documents(120, seed=9)
        ingest_documents("fused", docs, service=svc)
        for query, filt in [
            (" ".join(str(docs[4]["text"]).split()[:4]), None),
            (" ".join(str(docs[31]["text"]).split()[:3]), {"metadata.even": True}),
        ]:
            lists = [
                [
                    (h.document_id, h.score)
                    for h in search("fused", query, prefetch, filt, mode=m, service=svc)
                ]
                for m in ("dense", "sparse")
            ]
            want = rrf(lists, rrf_k) if fusion == "rrf" else dbsf(lists)
            hits = search("fused", query, 10, filt, mode="hybrid", service=svc)
            assert len(hits) == 10
            if filt is not None:
                assert all(h.payload["metadata"]["even"] for h in hits)
            for hit in hits:
                assert hit.score == pytest.approx(want[hit.document_id], abs=1e-6)
            assert [h.score for h in hits] == pytest.approx(
                sorted(want.values(), reverse=True)[:10], abs=1e-6
            )
    finally:
        svc.close()


def test_hybrid_composes_with_grouping_by_document(svc: Cdeq) -> None:
    """The kwargs of one search feed `query_points_groups` as they are (the long-documents
    issue groups chunks by document_id): same documents, same order, filter kept. Local mode
    widens every prefetch to the whole collection when grouping, so both calls here prefetch
    all 60 points (a server keeps the limits)."""
    docs = documents(60, seed=2)
    ingest_documents("grouped", docs, service=svc)
    query = " ".join(str(docs[3]["text"]).split()[:4])
    physical = svc.store.resolve("grouped")
    assert physical is not None
    for fusion in ("rrf", "dbsf"):
        ranking = Ranking(mode="hybrid", fusion=fusion, dense_prefetch=60, sparse_prefetch=60)  # type: ignore[arg-type]
        context = svc.contexts.current("grouped")
        dense = svc.embedder.embed_queries([query], context.dataset_embeddings).vectors[0]
        from app.sparse import query_sparse

        sparse = query_sparse(svc, physical, query)
        flt = models.Filter(
            must=[models.FieldCondition(key="metadata.even", match=models.MatchValue(value=True))]
        )
        kwargs = query_kwargs(ranking, [float(x) for x in dense], sparse, 5, flt)
        groups = svc.store.client.query_points_groups(
            physical, group_by="document_id", group_size=1, limit=5, with_payload=True, **kwargs
        ).groups
        points = svc.store.client.query_points(
            physical, limit=5, with_payload=True, **kwargs
        ).points
        assert [g.id for g in groups] == [p.payload["document_id"] for p in points]  # type: ignore[index]
        assert [g.hits[0].score for g in groups] == pytest.approx([p.score for p in points])
        assert len(groups) == 5 and all(g.hits[0].payload["metadata"]["even"] for g in groups)  # type: ignore[index]


# ---- modes, refusal, rebuilds ---------------------------------------------------------------
def test_modes_default_and_bad_mode(svc: Cdeq) -> None:
    assert SEARCH_MODES == ("dense", "sparse", "hybrid")
    ingest_documents("modes", documents(30), service=svc)
    text = str(documents(30)[5]["text"])
    dense = search("modes", text, 3, service=svc)
    assert [h.score for h in dense] == [
        h.score for h in search("modes", text, 3, mode="dense", service=svc)
    ]
    assert search("modes", text, 3, mode="sparse", service=svc)[0].document_id == "doc-5"
    with pytest.raises(
        InvalidInput, match=r"mode: must be one of \['dense', 'sparse', 'hybrid'\], got 'bm25'"
    ):
        search("modes", text, mode="bm25", service=svc)
    info = context_info("modes", service=svc)
    assert info.sparse is True and info.to_dict()["sparse"] is True
    assert [c.sparse for c in svc.store.list_collections()] == [True]


def test_sparse_off_writes_none_and_refuses_sparse_search(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    svc = service(tiny_model_dir, tmp_path / "qdrant", embedder, sparse=False)
    try:
        ingest_documents("plain", documents(20), service=svc)
        records, _ = svc.store.client.scroll("plain", limit=100, with_vectors=True)
        assert all(not isinstance(r.vector, dict) or "bm25" not in r.vector for r in records)
        assert search("plain", "text", mode="dense", service=svc)
        assert svc.store.load_bm25_stats(svc.store.resolve("plain") or "").documents == 0
    finally:
        svc.close()


def make_old(svc: Cdeq, name: str) -> None:
    """Turn the live version of `name` into what cdeq made before #18: the same points, the
    dense vector alone, no sparse config, no BM25 statistics."""
    physical = svc.store.resolve(name)
    assert physical is not None
    records, _ = svc.store.client.scroll(
        physical, limit=10_000, with_payload=True, with_vectors=[""]
    )
    client = svc.store.client
    client.delete_collection(physical)  # drops the alias too
    client.create_collection(
        physical,
        vectors_config=models.VectorParams(size=svc.store.dim, distance=models.Distance.DOT),
    )
    client.upsert(
        physical,
        [
            models.PointStruct(
                id=r.id,
                vector=r.vector if isinstance(r.vector, list) else r.vector[""],  # type: ignore[arg-type,index,call-overload]
                payload={k: v for k, v in (r.payload or {}).items() if k != "bm25_terms"},
            )
            for r in records
        ],
    )
    svc.store.save_bm25_stats(physical, Bm25Stats())
    svc.store.set_alias(name, physical)


def test_an_old_collection_refuses_sparse_and_a_rebuild_migrates_it(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    docs = documents(50)
    svc = service(tiny_model_dir, tmp_path / "qdrant", embedder)
    ingest_documents("old", docs[:40], service=svc)
    make_old(svc, "old")
    svc.close()  # a process that never saw the collection with sparse vectors
    svc = service(tiny_model_dir, tmp_path / "qdrant", embedder)
    request.addfinalizer(svc.close)
    assert ingest_documents("old", docs[40:], service=svc).succeeded == 10  # dense only
    assert sparse_of(svc, "old") == {} and svc.store.count("old") == 50
    assert search("old", "anything", mode="dense", service=svc)
    for mode in ("sparse", "hybrid"):
        with pytest.raises(Conflict, match=r"has no sparse vectors.*`cdeq context rebuild old`"):
            search("old", "anything", mode=mode, service=svc)
    assert context_info("old", service=svc).sparse is False
    rebuild_context("old", service=svc)
    assert svc.store.resolve("old") == "old__c2" and context_info("old", service=svc).sparse
    assert len(sparse_of(svc, "old")) == 50  # computed: the old version had none to copy
    assert search("old", str(docs[8]["text"]), mode="sparse", service=svc)[0].document_id == "doc-8"


def test_a_rebuild_carries_the_sparse_vectors_over(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    svc = service(tiny_model_dir, tmp_path / "qdrant", embedder)
    ingest_documents("carry", documents(80), service=svc)
    before = sparse_of(svc, "carry")
    stats = svc.store.load_bm25_stats("carry__c1")
    svc.close()
    # Another k1 now: vectors computed again would differ, copied ones do not.
    svc = service(tiny_model_dir, tmp_path / "qdrant", embedder, bm25_k1=2.0)
    try:
        rebuild_context("carry", service=svc)
        assert svc.store.resolve("carry") == "carry__c2"
        after = sparse_of(svc, "carry")
        assert len(after) == 80 and after == before  # every vector carried over, bit for bit
        assert svc.store.load_bm25_stats("carry__c2") == stats
    finally:
        svc.close()
    # Other term rules (as another tokenizer would be): the rebuild recomputes them.
    svc = service(tiny_model_dir, tmp_path / "qdrant", embedder, bm25_terms="pieces")
    try:
        rebuild_context("carry", service=svc)
        after = sparse_of(svc, "carry")
        assert len(after) == 80 and all(after[d] != before[d] for d in before)
        assert svc.store.load_bm25_stats("carry__c3").signature == svc.bm25.signature
        assert (
            search("carry", str(documents(80)[9]["text"]), mode="sparse", service=svc)[
                0
            ].document_id
            == "doc-9"
        )
    finally:
        svc.close()


def test_the_average_length_grows_with_the_batches(svc: Cdeq) -> None:
    docs = documents(40)
    ingest_documents("avg", docs[:20], service=svc)
    ingest_documents("avg", docs[20:], service=svc)
    stats = svc.store.load_bm25_stats("avg__c1")
    lengths = [len(t) for t in svc.bm25.terms([str(d["text"]) for d in docs])]
    assert (stats.documents, stats.terms) == (40, sum(lengths))
    # The first batch was weighted with its own average, the second with all 40.
    stored = sparse_of(svc, "avg")
    first = svc.bm25.terms([str(docs[0]["text"])])[0]
    late = svc.bm25.terms([str(docs[30]["text"])])[0]
    assert stored["doc-0"][1] == pytest.approx(
        document_vector(first, sum(lengths[:20]) / 20, K1, B).values
    )
    assert stored["doc-30"][1] == pytest.approx(
        document_vector(late, sum(lengths) / 40, K1, B).values
    )


# ---- the store, on every backend that answers ------------------------------------------------
def test_store_writes_and_searches_sparse_vectors(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    from app.store import PointRecord

    name = uniq("sp")
    store.ensure_meta_collection()
    physical = store.ensure_physical(name, 1)
    store.set_alias(name, physical)
    eye = np.eye(4, dtype=np.float32)

    def point(doc: str, i: int, sparse: SparseVector | None) -> PointRecord:
        return PointRecord(
            doc, eye[i], f"text {doc}", {"i": i}, f"h{doc}", 1, sparse=sparse, sparse_terms=3
        )

    store.upsert(
        physical,
        [
            point("a", 0, SparseVector((1, 7), (1.0, 2.0))),
            point("b", 1, SparseVector((7,), (0.5,))),
            point("c", 2, None),  # no sparse vector: only dense finds it
        ],
    )
    assert store.has_sparse(name) and store.has_sparse(physical)
    (a,) = store.client.retrieve(physical, ids=[point_id(name, "a")], with_payload=True)
    assert a.payload is not None and a.payload["bm25_terms"] == 3  # not in the user payload
    sparse = SparseVector((7,), (1.0,))
    hits = store.search(name, None, 5, sparse=sparse, ranking=Ranking(mode="sparse"))
    assert [h.document_id for h in hits] == ["a", "b"]
    assert "bm25_terms" not in hits[0].payload
    # Qdrant's N counts the points that have a sparse vector (2, not 3); both have term 7:
    # IDF = ln(1 + (N - n + 0.5) / (n + 0.5)) = ln(1 + 0.5 / 2.5).
    idf = math.log(1 + 0.5 / 2.5)
    assert [h.score for h in hits] == pytest.approx([2.0 * idf, 0.5 * idf], abs=1e-5)
    # dense: c (1), b (0.5), a (0); sparse: a, b. RRF, k = 2: a 1/4 + 1/2, b 1/3 + 1/3, c 1/2.
    hybrid = store.search(
        name, eye[2] + 0.5 * eye[1], 3, sparse=sparse, ranking=Ranking(mode="hybrid", rrf_k=2)
    )
    assert [h.document_id for h in hybrid] == ["a", "b", "c"]
    assert [h.score for h in hybrid] == pytest.approx([0.75, 2 / 3, 0.5])
    filtered = store.search(
        name, eye[0], 3, {"metadata.i": 1}, sparse=sparse, ranking=Ranking(mode="hybrid")
    )
    assert [h.document_id for h in filtered] == ["b"]
    with pytest.raises(InvalidInput, match="needs a sparse query vector"):
        store.search(name, eye[0], 3, ranking=Ranking(mode="hybrid"))
    with pytest.raises(InvalidInput, match="sparse indices must be distinct u32"):
        store.upsert(physical, [point("d", 0, SparseVector((1, 1), (1.0, 1.0)))])
    with pytest.raises(InvalidInput, match="sparse values contain NaN"):
        store.upsert(physical, [point("d", 0, SparseVector((1,), (math.nan,)))])
    with pytest.raises(InvalidInput, match="mode must be one of"):
        query_kwargs(Ranking(mode="bm25"), [0.0] * 4, sparse, 3, None)  # type: ignore[arg-type]


def test_an_old_physical_collection_is_refused_for_sparse_search(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    name = uniq("old")
    physical = f"{name}__c1"
    store.client.create_collection(
        physical, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT)
    )
    store.set_alias(name, physical)
    assert store.ensure_physical(name, 1) == physical  # left as it is
    assert not store.has_sparse(name)
    assert [c.sparse for c in store.list_collections() if c.name == name] == [False]
    for mode in ("sparse", "hybrid"):
        with pytest.raises(Conflict, match=f"`cdeq context rebuild {name}` adds them"):
            store.search(
                name,
                [1.0, 0, 0, 0],
                3,
                sparse=SparseVector((1,), (1.0,)),
                ranking=Ranking(mode),  # type: ignore[arg-type]
            )
    assert store.search(name, [1.0, 0, 0, 0], 3) == []


# ---- HTTP and CLI --------------------------------------------------------------------------------
def test_http_search_takes_a_mode_and_refuses_an_old_collection(api_service: Cdeq) -> None:
    from fastapi.testclient import TestClient

    from app.api import create_app
    from tests.helpers.builders import assert_error

    with TestClient(create_app(api_service.settings, api_service)) as client:
        docs = documents(40, seed=4)
        r = client.post("/v1/collections/httpmodes/documents", json={"documents": docs})
        assert r.status_code == 200, r.text
        url = "/v1/collections/httpmodes/search"
        text = str(docs[6]["text"])
        want = search("httpmodes", text, 5, mode="sparse", service=api_service)
        r = client.post(url, json={"text": text, "top_k": 5, "mode": "sparse"})
        assert r.status_code == 200, r.text
        got = r.json()["results"]
        assert [h["id"] for h in got] == [h.document_id for h in want] and got[0]["id"] == "doc-6"
        assert [h["score"] for h in got] == pytest.approx([h.score for h in want])
        for mode in ("dense", "hybrid", None):
            r = client.post(url, json={"text": text, "top_k": 5, "mode": mode})
            assert r.status_code == 200 and len(r.json()["results"]) == 5, r.text
        error = assert_error(client.post(url, json={"text": text, "mode": "bm25"}), 400, "mode")
        assert "must be one of ['dense', 'sparse', 'hybrid'], got 'bm25'" in error["message"]
        assert_error(client.post(url, json={"text": text, "mode": 3}), 400, "mode")
        listed = client.get("/v1/collections").json()["data"]
        assert [c["sparse"] for c in listed if c["name"] == "httpmodes"] == [True]

        make_old(api_service, "httpmodes")
        api_service.store._core.sparse_known.clear()  # as a process that never saw it
        error = assert_error(client.post(url, json={"text": text, "mode": "hybrid"}), 409)
        assert "`cdeq context rebuild httpmodes` adds them" in error["message"]
        assert client.post(url, json={"text": text, "mode": "dense"}).status_code == 200
        shown = client.get("/v1/collections/httpmodes/context").json()
        assert shown["sparse"] is False


def test_cli_search_mode(tiny_model_dir: Path, tmp_path: Path) -> None:
    import json

    from tests.helpers.builders import cdeq

    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps(d) for d in documents(30, seed=8)) + "\n")
    model = ["--model", str(tiny_model_dir)]
    ingest = cdeq("ingest", str(docs), "--collection", "cli", *model, cwd=tmp_path)
    assert ingest.returncode == 0, ingest.stderr
    text = str(documents(30, seed=8)[12]["text"])
    found = cdeq("search", "cli", text, "--mode", "sparse", "--json", *model, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["id"] == "doc-12"
    bad = cdeq("search", "cli", text, "--mode", "bm25", *model, cwd=tmp_path)
    assert bad.returncode == 2 and "invalid choice: 'bm25'" in bad.stderr
    env = {"CDEQ_MODEL__NAME": str(tiny_model_dir)}
    listed = cdeq("collections", cwd=tmp_path, env=env)
    assert "sparse" in listed.stdout and "dense only" not in listed.stdout
    shown = cdeq("context", "show", "cli", cwd=tmp_path, env=env)
    assert "sparse vectors yes (bm25)" in shown.stdout, shown.stderr

    local = Cdeq(make_settings(tiny_model_dir, tmp_path / "cdeq-data"))
    make_old(local, "cli")
    local.close()
    refused = cdeq("search", "cli", text, "--mode", "hybrid", *model, cwd=tmp_path)
    assert refused.returncode == 6, refused.stderr  # Conflict's exit code
    assert "`cdeq context rebuild cli` adds them" in refused.stderr
    assert cdeq("search", "cli", text, *model, cwd=tmp_path).returncode == 0  # dense still


# ---- LangChain's Qdrant store reads a cdeq collection in hybrid mode ----------------------------
def test_langchain_reads_a_cdeq_collection_in_hybrid_mode(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    pytest.importorskip("langchain_qdrant")
    from langchain_core.embeddings import Embeddings
    from langchain_qdrant import QdrantVectorStore, RetrievalMode, SparseEmbeddings
    from langchain_qdrant import SparseVector as LcSparse

    k = 4
    svc = service(
        tiny_model_dir, tmp_path / "qdrant", embedder, dense_prefetch=k, sparse_prefetch=k
    )
    try:
        docs = documents(60, seed=12)
        ingest_documents("lc", docs, service=svc)
        context = svc.contexts.current("lc")

        class Dense(Embeddings):  # what CdeqEmbeddings asks `cdeq serve` for, in process
            def embed_query(self, text: str) -> list[float]:
                vectors = svc.embedder.embed_queries([text], context.dataset_embeddings).vectors
                return [float(x) for x in vectors[0]]

            def embed_documents(self, texts: list[str]) -> list[list[float]]:
                # LangChain embeds one dummy text to check the collection's vector size.
                vectors = svc.embedder.embed_documents(texts, context.dataset_embeddings).vectors
                return [[float(x) for x in v] for v in vectors]

        class CdeqBm25(SparseEmbeddings):  # as docs/search-modes.md shows
            def __init__(self) -> None:
                self.terms = Bm25Terms(svc.embedder.tokenizer, "words")

            def embed_query(self, text: str) -> LcSparse:
                v = query_vector(self.terms.terms([text])[0])
                return LcSparse(indices=list(v.indices), values=list(v.values))

            def embed_documents(self, texts: list[str]) -> list[LcSparse]:
                return [self.embed_query(t) for t in texts]

        lc = QdrantVectorStore(
            svc.store.client,
            collection_name="lc",
            embedding=Dense(),
            retrieval_mode=RetrievalMode.HYBRID,
            vector_name="",
            sparse_vector_name="bm25",
            sparse_embedding=CdeqBm25(),
            content_payload_key="text",
            metadata_payload_key="metadata",
            distance=models.Distance.DOT,
        )
        texts = {str(d["id"]): d["text"] for d in docs}
        for query in (
            str(docs[17]["text"]).split()[2],
            " ".join(str(docs[40]["text"]).split()[:5]),
        ):
            hits = search("lc", query, top_k=k, mode="hybrid", service=svc)
            found = lc.similarity_search_with_score(query, k=k)
            assert [d.page_content for d, _ in found] == [texts[h.document_id] for h in hits]
            assert [s for _, s in found] == pytest.approx([h.score for h in hits], abs=1e-6)
    finally:
        svc.close()
