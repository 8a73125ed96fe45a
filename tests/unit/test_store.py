"""The Qdrant adapter, run as congruence tests on every backend the `store` fixture provides."""

from __future__ import annotations

import email.utils
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from qdrant_client import models

from app.config import QdrantSettings
from app.errors import CdeqError, InvalidInput, NotFound, StoreUnavailable
from app.store import (
    META_COLLECTION,
    CollectionInfo,
    ContextRecord,
    ContextSource,
    PointRecord,
    QdrantStore,
    open_client,
    parse_physical,
    point_id,
)
from app.store.batches import estimate_point_bytes, plan_batches
from app.store.client import retry_after_seconds

DIM = 4
E = np.eye(DIM, dtype=np.float32)  # unit vectors: dot products are exact and easy to reason about


def rec(
    doc: str, vector: object, *, version: int = 1, text: str | None = None, **meta: object
) -> PointRecord:
    return PointRecord(
        document_id=doc,
        vector=vector,  # type: ignore[arg-type]
        text=f"text of {doc}" if text is None else text,
        metadata=dict(meta),
        content_hash=f"hash-{doc}",
        context_version=version,
    )


def live(store: QdrantStore, name: str, version: int = 1) -> str:
    """A user collection `name` whose alias points at a fresh physical collection of `version`."""
    physical = store.ensure_physical(name, version)
    store.set_alias(name, physical)
    return physical


def variant(store: QdrantStore, **kwargs: object) -> QdrantStore:
    """Another store on the same client and meta collection, with different settings."""
    return QdrantStore(store.client, dim=DIM, meta_collection=store.meta_collection, **kwargs)  # type: ignore[arg-type]


# ---- ids -------------------------------------------------------------------------------------


def test_point_id_is_a_fixed_uuid5_of_collection_and_document() -> None:
    expected = uuid.uuid5(uuid.UUID("4ca45e13-282a-4774-929a-03d1b2e7179f"), "docs\x00a")
    assert point_id("docs", "a") == str(expected)  # pinned: changing it would duplicate every point
    assert point_id("docs", "a") == point_id("docs", "a")
    assert point_id("docs", "a") != point_id("other", "a")
    assert point_id("ab", "c") != point_id("a", "bc")


def test_parse_physical() -> None:
    assert parse_physical("docs__c12") == ("docs", 12)
    assert parse_physical("my__c__c3") == ("my__c", 3)
    assert parse_physical("docs") is None
    assert parse_physical("docs__c0") is None


# ---- points ----------------------------------------------------------------------------------


def test_upsert_twice_keeps_one_point_per_document(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    name = uniq("docs")
    physical = live(store, name)
    points = [rec(f"d{i}", E[i % DIM]) for i in range(6)]
    store.upsert(physical, points)
    store.upsert(physical, points)
    store.upsert(physical, [rec("d0", E[1], text="changed"), rec("d0", E[2], text="last wins")])
    assert store.count(name) == 6
    assert store.get_documents(name, ["d0"])["d0"]["text"] == "last wins"


def test_point_ids_are_stable_across_context_versions(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    name = uniq("docs")
    v1, v2 = store.ensure_physical(name, 1), store.ensure_physical(name, 2)
    store.upsert(v1, [rec("a", E[0], version=1)])
    store.upsert(v2, [rec("a", E[0], version=2)])
    for physical in (v1, v2):
        (point,) = store.client.retrieve(physical, ids=[point_id(name, "a")], with_payload=True)
        assert point.payload == {
            "document_id": "a",
            "text": "text of a",
            "metadata": {},
            "content_hash": "hash-a",
            "context_version": int(physical[-1]),
            "collection": name,
            # a one-chunk document: today's payload plus the chunk fields
            "chunk_index": 0,
            "chunk_count": 1,
            "char_start": 0,
            "char_end": len("text of a"),
        }


def test_alias_switch_is_atomic_and_search_follows_it(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    name = uniq("docs")
    v1, v2 = store.ensure_physical(name, 1), store.ensure_physical(name, 2)
    store.upsert(v1, [rec("old", E[0], version=1)])
    store.upsert(v2, [rec("new", E[0], version=2)])
    assert store.resolve(name) is None
    assert not store.collection_exists(name)
    store.set_alias(name, v1)
    assert [h.document_id for h in store.search(name, E[0])] == ["old"]
    store.set_alias(name, v2)
    assert store.resolve(name) == v2
    assert [h.document_id for h in store.search(name, E[0])] == ["new"]
    assert [h.payload["context_version"] for h in store.search(name, E[0])] == [2]
    store.set_alias(name, v2)  # already there: nothing to do
    assert store.resolve(name) == v2
    assert store.physical_collections(name) == [v1, v2]  # the old one stays until dropped


def test_readers_never_see_a_gap_while_the_alias_switches(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    name = uniq("docs")
    v1, v2 = store.ensure_physical(name, 1), store.ensure_physical(name, 2)
    store.upsert(v1, [rec("old", E[0], version=1)])
    store.upsert(v2, [rec("new", E[0], version=2)])
    store.set_alias(name, v1)
    seen: list[str] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                seen.extend(h.document_id for h in store.search(name, E[0]))
            except CdeqError as exc:  # a gap would show up here as NotFound
                failures.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(40):
            store.set_alias(name, v2 if i % 2 == 0 else v1)
    finally:
        done.set()
        reader.join()
    assert failures == []
    assert seen and set(seen) <= {"old", "new"}


def test_set_alias_refuses_a_foreign_or_missing_physical(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    name, other = uniq("docs"), uniq("other")
    other_physical = store.ensure_physical(other, 1)
    with pytest.raises(InvalidInput):
        store.set_alias(name, other_physical)
    with pytest.raises(NotFound):
        store.set_alias(name, store.physical_name(name, 7))
    assert store.resolve(name) is None


def test_ensure_physical_is_idempotent_and_checks_dimension(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    name = uniq("docs")
    assert store.ensure_physical(name, 1) == f"{name}__c1"
    assert store.ensure_physical(name, 1) == f"{name}__c1"
    info = store.client.get_collection(f"{name}__c1")
    assert info.config.params.vectors == models.VectorParams(size=DIM, distance=models.Distance.DOT)
    with pytest.raises(CdeqError, match="holds 4-dim Dot vectors"):
        QdrantStore(store.client, dim=8, meta_collection=store.meta_collection).ensure_physical(
            name, 1
        )


def test_store_text_false_omits_text(store: QdrantStore, uniq: Callable[[str], str]) -> None:
    name = uniq("docs")
    physical = live(store, name)
    variant(store, store_text=False).upsert(physical, [rec("a", E[0])])
    (hit,) = store.search(name, E[0])
    assert "text" not in hit.payload
    assert hit.payload == {
        "document_id": "a",
        "metadata": {},
        "content_hash": "hash-a",
        "context_version": 1,
        "chunk_index": 0,
        "chunk_count": 1,
        "char_start": 0,
        "char_end": len("text of a"),  # the offsets stay when the text is not stored
    }


def test_upsert_splits_by_count_and_by_bytes(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    name = uniq("docs")
    physical = live(store, name)
    variant(store, upsert_batch_size=3).upsert(
        physical, [rec(f"c{i}", E[i % DIM]) for i in range(10)]
    )
    assert store.count(name) == 10
    # ~1 KB of text per point, 3 KB per request: several requests, every point stored.
    small = variant(store, max_request_bytes=3000)
    small.upsert(physical, [rec(f"b{i}", E[i % DIM], text="x" * 1000) for i in range(7)])
    assert store.count(name) == 17
    with pytest.raises(InvalidInput, match="request limit"):
        small.upsert(physical, [rec("huge", E[0], text="x" * 5000)])


def test_plan_batches_respects_both_limits() -> None:
    sizes = [100, 200, 300, 400, 50, 50, 50, 50]
    batches = list(plan_batches(sizes, max_points=3, max_bytes=64 + 600))
    assert [list(b) for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert [i for b in batches for i in b] == list(range(len(sizes)))
    for batch in batches:
        assert len(batch) <= 3 and sum(sizes[i] for i in batch) <= 600
    assert list(plan_batches([], max_points=3, max_bytes=1000)) == []
    with pytest.raises(InvalidInput, match="point #1"):
        list(plan_batches([10, 5000], max_points=3, max_bytes=1000))


@pytest.mark.parametrize("text", ["plain", "ünïcödé ✓ 🧪" * 50, '"quotes" \\ and \n newlines'])
def test_size_estimate_bounds_the_json_the_client_sends(text: str) -> None:
    extremes = [-3.4028235e38, 1.1754944e-38, -1.2345678e-05, 0.1]
    vector = np.array(extremes * 64, dtype=np.float32)  # 256 dims of the longest float spellings
    payload = {
        "document_id": "doc-1",
        "text": text,
        "metadata": {"k": [1, 2.5, None]},
        "content_hash": "h",
    }
    point = models.PointStruct(id=point_id("c", "doc-1"), vector=vector.tolist(), payload=payload)
    sent = [
        point.model_dump_json(),
        json.dumps(point.model_dump(mode="json"), ensure_ascii=True),
        json.dumps(point.model_dump(mode="json"), ensure_ascii=False),
    ]
    estimate = estimate_point_bytes(len(vector), payload)
    for body in sent:
        assert len(body.encode("utf-8")) <= estimate
    assert estimate < 2 * max(len(b.encode("utf-8")) for b in sent)  # an estimate, not a guess


def test_search_orders_by_dot_product(store: QdrantStore, uniq: Callable[[str], str]) -> None:
    name = uniq("docs")
    physical = live(store, name)
    store.upsert(physical, [rec("x", E[0]), rec("y", E[1]), rec("xy", (E[0] + E[1]) / np.sqrt(2))])
    query = np.array([0.8, 0.6, 0.0, 0.0], dtype=np.float32)
    hits = store.search(name, query, top_k=3)
    assert [h.document_id for h in hits] == ["xy", "x", "y"]
    assert [h.score for h in hits] == pytest.approx([1.4 / np.sqrt(2), 0.8, 0.6], abs=1e-6)
    assert [h.document_id for h in store.search(name, query, top_k=1)] == ["xy"]
    assert hits[1].payload == {
        "document_id": "x",
        "text": "text of x",
        "metadata": {},
        "content_hash": "hash-x",
        "context_version": 1,
        "chunk_index": 0,
        "chunk_count": 1,
        "char_start": 0,
        "char_end": len("text of x"),
    }


def test_search_filters(store: QdrantStore, uniq: Callable[[str], str]) -> None:
    name = uniq("docs")
    physical = live(store, name)
    store.upsert(
        physical,
        [
            rec("a", E[0], lang="en", year=2020, public=True),
            rec("b", E[0], lang="de", year=2021, public=False),
            rec("c", E[0], lang="fr", year=2022, public=True),
        ],
    )

    def found(flt: object) -> set[str]:
        return {h.document_id for h in store.search(name, E[0], filter=flt)}  # type: ignore[arg-type]

    assert found({"metadata.lang": "de"}) == {"b"}
    assert found({"metadata.year": 2022}) == {"c"}
    assert found({"metadata.public": True}) == {"a", "c"}
    assert found({"metadata.lang": ["en", "de"]}) == {"a", "b"}
    assert found({"metadata.year": [2020, 2022], "metadata.lang": "fr"}) == {"c"}
    assert found({"document_id": "a"}) == {"a"}
    assert found({}) == {"a", "b", "c"}
    qdrant_filter = models.Filter(
        must_not=[models.FieldCondition(key="metadata.lang", match=models.MatchValue(value="en"))]
    )
    assert found(qdrant_filter) == {"b", "c"}
    with pytest.raises(InvalidInput) as caught:
        found({"metadata.x": 1.5, "metadata.y": [], "metadata.z": [1, "a"], "": "v"})
    assert len(caught.value.problems) == 4


def test_delete_documents_counts_those_that_existed(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    name = uniq("docs")
    physical = live(store, name)
    store.upsert(physical, [rec(d, E[0]) for d in "abc"])
    rebuild = store.ensure_physical(name, 2)  # a context rebuild in progress beside the live one
    store.upsert(rebuild, [rec(d, E[0], version=2) for d in "abc"])
    assert store.delete_documents(name, ["a", "b", "missing", "a"]) == 2
    assert store.count(name) == 1
    assert store.client.count(rebuild, exact=True).count == 1  # so "a" cannot return on the switch
    assert store.delete_documents(name, ["a"]) == 0
    assert store.delete_documents(name, []) == 0
    assert set(store.get_documents(name, ["a", "c"])) == {"c"}


def test_unknown_collection_is_not_found(store: QdrantStore, uniq: Callable[[str], str]) -> None:
    name = uniq("nothing")
    physical = live(store, uniq("real"))
    for call in (
        lambda: store.search(name, E[0]),
        lambda: store.count(name),
        lambda: store.delete_documents(name, ["a"]),
        lambda: store.get_documents(name, ["a"]),
        lambda: store.get_documents(name, []),
        lambda: store.drop_collection(name),
        lambda: store.upsert(store.physical_name(name, 1), [rec("a", E[0])]),
        # names that are not user collections never reach a physical or the meta collection
        lambda: store.count(physical),
        lambda: store.count(store.meta_collection),
        lambda: store.drop_collection(physical),
    ):
        with pytest.raises(NotFound):
            call()
    assert store.resolve(name) is None


def test_bad_input_is_refused_with_every_problem(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    name = uniq("docs")
    physical = live(store, name)
    bad = [
        rec("wrong-dim", [1.0, 0.0]),
        rec("nan", [np.nan, 0, 0, 0]),
        rec("other-context", E[0], version=2),
        rec("", E[0]),
        rec("ok", E[0]),
    ]
    with pytest.raises(InvalidInput) as caught:
        store.upsert(physical, bad)
    assert len(caught.value.problems) == 4
    assert store.count(name) == 0  # nothing half written
    for call in (
        lambda: store.upsert(name, [rec("a", E[0])]),  # not a physical name
        lambda: store.search(name, [1.0, 2.0]),
        lambda: store.search(name, E[0], top_k=0),
        lambda: store.physical_name("bad name!", 1),
        lambda: store.physical_name("x__c2", 1),
        lambda: store.physical_name(META_COLLECTION, 1),
        lambda: store.physical_name("docs", 0),
    ):
        with pytest.raises(InvalidInput):
            call()


@pytest.mark.parametrize(
    "bad", ["Docs", "docs.v2", "x" * 64, "-docs", "", "docs__c3", META_COLLECTION, "meta"]
)
def test_collection_names_follow_the_documented_rule(
    store: QdrantStore, uniq: Callable[[str], str], bad: str
) -> None:
    # The app.names rule: 1-63 of a-z 0-9 _ -, starting with a letter or digit; physical names,
    # the meta collection and this store's own meta collection are cdeq's. Upper case, dots and
    # up to 128 characters were accepted before the rule moved to app.names.
    name = store.meta_collection if bad == "meta" else bad
    with pytest.raises(InvalidInput) as caught:
        store.ensure_physical(name, 1)
    assert caught.value.field == "collection"
    assert "collection:" in str(caught.value)
    assert "reserved" in str(caught.value) or "lower-case letters" in str(caught.value)
    with pytest.raises(NotFound):
        store.count(name)
    longest = uniq("x" * 52)
    assert len(longest) == 63
    assert store.ensure_physical(longest, 1) == f"{longest}__c1"


def test_list_collections_reports_exact_counts(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    a, b = uniq("a"), uniq("b")
    store.upsert(live(store, a), [rec(f"d{i}", E[0]) for i in range(5)])
    store.upsert(live(store, b, version=3), [rec("d", E[0], version=3)])
    store.ensure_physical(uniq("no-alias-yet"), 1)  # a build that never went live is not listed
    mine = [info for info in store.list_collections() if info.name in (a, b)]
    assert mine == [
        CollectionInfo(a, f"{a}__c1", 5, 1, documents=5, sparse=True),
        CollectionInfo(b, f"{b}__c3", 1, 3, documents=1, sparse=True),
    ]


def test_drop_collection_removes_alias_physicals_and_contexts(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    store.ensure_meta_collection()
    name, keep = uniq("docs"), uniq("keep")
    store.upsert(live(store, name), [rec("a", E[0])])
    store.ensure_physical(name, 2)
    store.upsert(live(store, keep), [rec("a", E[0])])
    for collection in (name, keep):
        store.save_context(context(collection, 1))
    store.drop_collection(name)
    assert not store.collection_exists(name)
    assert store.physical_collections(name) == []
    assert store.load_context(name) is None
    assert store.next_context_version(name) == 1
    with pytest.raises(NotFound):
        store.drop_collection(name)
    assert store.count(keep) == 1 and store.load_context(keep) is not None


# ---- contexts --------------------------------------------------------------------------------


def context(
    collection: str,
    version: int,
    *,
    state: str = "ready",
    seed: int = 0,
    source: ContextSource = ContextSource.CORPUS,
) -> ContextRecord:
    rng = np.random.default_rng(seed)
    return ContextRecord(
        collection=collection,
        version=version,
        dataset_embeddings=(rng.standard_normal((16, DIM)) * 10).astype(np.float32),
        sampled_ids=[f"doc-{i}" for i in range(16)],
        model_id="jxm/cde-small-v1@abc123",
        created_at=1_700_000_000.123456,
        state=state,
        source=source,
    )


def test_context_round_trips_exactly(store: QdrantStore, uniq: Callable[[str], str]) -> None:
    store.ensure_meta_collection()
    name = uniq("docs")
    saved = context(name, 1)
    store.save_context(saved)
    loaded = store.load_context(name, 1)
    assert loaded is not None
    assert loaded.dataset_embeddings.dtype == np.float32
    assert np.array_equal(loaded.dataset_embeddings, saved.dataset_embeddings)
    assert loaded.dataset_embeddings.tobytes() == saved.dataset_embeddings.tobytes()
    for field in (
        "collection",
        "version",
        "sampled_ids",
        "model_id",
        "created_at",
        "state",
        "source",
    ):
        assert getattr(loaded, field) == getattr(saved, field)
    assert loaded.source is ContextSource.CORPUS
    loaded.dataset_embeddings[0, 0] = 1.0  # callers may normalise in place
    assert store.load_context(uniq("other")) is None
    assert store.load_context(name, 9) is None


def test_load_context_without_version_takes_the_highest_ready(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    store.ensure_meta_collection()
    name = uniq("docs")
    assert store.next_context_version(name) == 1
    store.save_context(context(name, 1, seed=1))
    store.save_context(context(name, 2, seed=2))
    store.save_context(context(name, 3, state="building", seed=3))
    latest = store.load_context(name)
    assert latest is not None and latest.version == 2
    assert np.array_equal(latest.dataset_embeddings, context(name, 2, seed=2).dataset_embeddings)
    assert store.next_context_version(name) == 4
    store.save_context(context(name, 3, seed=3))  # the build finished: same point, now ready
    latest = store.load_context(name)
    assert latest is not None and latest.version == 3
    store.ensure_physical(name, 7)  # a build that crashed before saving its context
    assert store.next_context_version(name) == 8


def test_context_sources_are_stored_as_plain_strings(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    store.ensure_meta_collection()
    name = uniq("docs")
    for version, source in enumerate(ContextSource, start=1):
        store.save_context(context(name, version, source=source))
    store.save_context(context(name, 9, source="explicit"))  # type: ignore[arg-type]
    records, _ = store.client.scroll(
        store.meta_collection, limit=100, with_payload=["collection", "version", "source"]
    )
    stored = {
        r.payload["version"]: r.payload["source"]
        for r in records
        if r.payload and r.payload.get("collection") == name
    }
    assert stored == {1: "corpus", 2: "explicit", 3: "generic", 4: "rebuild", 9: "explicit"}
    assert all(type(value) is str for value in stored.values())
    for version, source in [*enumerate(ContextSource, start=1), (9, ContextSource.EXPLICIT)]:
        loaded = store.load_context(name, version)
        assert loaded is not None and loaded.source is source


def test_context_validation_and_missing_meta(
    store: QdrantStore, uniq: Callable[[str], str]
) -> None:
    name = uniq("docs")
    with pytest.raises(CdeqError, match="cdeq migrate"):
        store.save_context(context(name, 1))
    with pytest.raises(CdeqError, match="cdeq migrate"):
        store.load_context(name)
    store.ensure_meta_collection()
    bad = ContextRecord(name, 0, np.zeros(3, np.float32), ["a"], "m", 0.0, source="mystery")
    with pytest.raises(InvalidInput) as caught:
        store.save_context(bad)
    assert len(caught.value.problems) == 3


# ---- connecting and failing ------------------------------------------------------------------


def test_nothing_listening_is_store_unavailable() -> None:
    store = QdrantStore.from_settings(
        QdrantSettings(url="http://127.0.0.1:9", timeout_s=1), dim=DIM
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        store.count("docs")
    assert caught.value.retry_after_s > 0
    assert time.monotonic() - started < 5
    with pytest.raises(StoreUnavailable):
        store.schema_version()
    store.close()


def test_local_path_is_created_persists_and_is_locked(tmp_path: Path) -> None:
    folder = tmp_path / "deep" / "qdrant"
    settings = QdrantSettings(path=str(folder))
    store = QdrantStore.from_settings(settings, dim=DIM)
    assert folder.is_dir()
    store.upsert(live(store, "docs"), [rec("a", E[0])])
    with pytest.raises(CdeqError, match="one process"):
        open_client(settings)  # local mode locks its folder
    store.close()
    again = QdrantStore.from_settings(settings, dim=DIM)
    assert again.count("docs") == 1
    again.close()


class _CannedQdrant(BaseHTTPRequestHandler):
    """Answers every request with the server's canned status, headers and body."""

    status = 503
    headers_out: ClassVar[dict[str, str]] = {}
    body = b'{"status": {"error": "busy"}}'

    def _answer(self) -> None:
        self.send_response(self.status)
        for key, value in self.headers_out.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def canned_server() -> Iterator[Callable[..., QdrantStore]]:
    # A real HTTP server with scripted answers (no mocks of Python objects): the only way to
    # make Qdrant say 429/503 with Retry-After on demand.
    servers: list[ThreadingHTTPServer] = []

    def start(
        status: int, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> QdrantStore:
        handler = type(
            "Handler",
            (_CannedQdrant,),
            {"status": status, "headers_out": headers or {}, "body": body or _CannedQdrant.body},
        )
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        return QdrantStore.from_settings(QdrantSettings(url=url, timeout_s=2), dim=DIM)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_overload_answers_carry_retry_after(canned_server: Callable[..., QdrantStore]) -> None:
    for status, headers, expected in (
        (429, {"Retry-After": "7"}, 7.0),
        (503, {"Retry-After": "3"}, 3.0),
        (503, {}, 1.0),
        (502, {}, 1.0),
    ):
        with pytest.raises(StoreUnavailable) as caught:
            canned_server(status, headers).count("docs")
        assert caught.value.retry_after_s == expected, status


def test_server_errors_map_to_domain_errors(canned_server: Callable[..., QdrantStore]) -> None:
    missing = b'{"status": {"error": "Not found: Collection `docs` doesn\'t exist!"}}'
    with pytest.raises(NotFound, match="'docs' does not exist"):
        canned_server(404, body=missing).search("docs", E[0])
    with pytest.raises(InvalidInput, match="bad vector"):
        canned_server(400, body=b'{"status": {"error": "bad vector"}}').search("docs", E[0])
    with pytest.raises(CdeqError, match="API_KEY"):
        canned_server(403, body=b'{"status": {"error": "forbidden"}}').count("docs")
    with pytest.raises(CdeqError, match="cannot read"):
        canned_server(200, body=b'{"result": "not a count"}').count("docs")


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds(None) == 1.0
    assert retry_after_seconds("soon", default=4.0) == 4.0
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 5 < retry_after_seconds(in_ten) <= 10
    assert retry_after_seconds(email.utils.formatdate(0, usegmt=True)) == 0.0
