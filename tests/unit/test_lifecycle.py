"""Context lifecycle in in-process mode (no Redis): the automatic upgrade policy, searches that
never mix two contexts, the verbs' errors, and the CLI and HTTP faces of the lifecycle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.server import create_app
from app.errors import Conflict, InvalidInput, NotFound
from app.ingest import ingest_documents
from app.lifecycle import (
    context_info,
    drop_collection,
    prune,
    rebuild_context,
    rebuild_counts,
    rollback,
)
from app.model import CdeEmbedder
from app.query import search
from app.service import Cdeq
from tests.helpers.builders import assert_error, cdeq, corpus, make_settings
from tests.helpers.faults import CountingEmbedder


def _service(model: Path, path: Path, embedder: Any, **context: Any) -> Cdeq:
    settings = make_settings(model, path, min_context_documents=8)
    for key, value in context.items():
        setattr(settings.context, key, value)
    return Cdeq(settings, embedder=embedder)


@pytest.fixture()
def svc(tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path) -> Iterator[Cdeq]:
    service = _service(tiny_model_dir, tmp_path / "qdrant", CountingEmbedder(embedder))
    yield service
    service.close()


# ---- the automatic policy -------------------------------------------------------------------------
def test_generic_context_becomes_a_corpus_context_once_there_are_enough_documents(
    svc: Cdeq,
) -> None:
    docs = corpus(20)
    ingest_documents("notes", docs[:3], service=svc)
    info = context_info("notes", service=svc)
    assert (info.source, info.auto_rebuild_due, info.version) == ("generic", None, 1)
    ingest_documents("notes", docs[3:], service=svc)  # 20 >= 8: the policy rebuilds
    info = context_info("notes", service=svc)
    assert (info.version, info.source, info.trigger) == (2, "rebuild", "auto-generic")
    assert (info.points_at_build, info.points_now, info.distinct_documents) == (20, 20, 16)
    assert rebuild_counts(service=svc) == {"manual": 0, "auto-generic": 1, "auto-growth": 0}


def test_growth_trigger_fires_once(svc: Cdeq) -> None:
    docs = corpus(75)
    ingest_documents("grow", docs[:10], service=svc)
    assert context_info("grow", service=svc).points_at_build == 10
    ingest_documents("grow", docs[10:40], service=svc)  # growth 4.0: not over 4
    assert context_info("grow", service=svc).version == 1
    ingest_documents("grow", docs[40:70], service=svc)  # growth 7: rebuild
    info = context_info("grow", service=svc)
    assert (info.version, info.trigger, info.points_at_build, info.growth) == (
        2,
        "auto-growth",
        70,
        1.0,
    )
    ingest_documents("grow", docs[70:], service=svc)  # growth 75/70: nothing more
    assert context_info("grow", service=svc).version == 2
    assert rebuild_counts(service=svc)["auto-growth"] == 1


def test_the_policy_can_be_switched_off(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    svc = _service(tiny_model_dir, tmp_path / "q", embedder, auto_rebuild=False)
    try:
        docs = corpus(20)
        ingest_documents("off", docs[:3], service=svc)
        ingest_documents("off", docs[3:], service=svc)
        info = context_info("off", service=svc)
        assert (info.version, info.source, info.auto_rebuild_due) == (1, "generic", None)
    finally:
        svc.close()


# ---- queries never mix contexts -----------------------------------------------------------------
class SwapOnQuery:
    """The real embedder; when armed, it moves the alias right after embedding a query, i.e.
    between a search's two steps (only the timing is staged)."""

    def __init__(self, inner: CdeEmbedder) -> None:
        self.inner = inner
        self.swap: tuple[Any, str, str] | None = None

    def embed_queries(self, *args: Any, **kwargs: Any) -> Any:
        out = self.inner.embed_queries(*args, **kwargs)
        if self.swap is not None:
            store, collection, physical = self.swap
            store.set_alias(collection, physical)
            self.swap = None
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_swap_between_embedding_and_searching_does_not_mix_contexts(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    spy = SwapOnQuery(embedder)
    svc = _service(tiny_model_dir, tmp_path / "q", spy, auto_rebuild=False)
    try:
        docs = corpus(60)
        ingest_documents("mix", docs, service=svc)
        rebuild_context("mix", sample_size=30, seed=7, service=svc)
        assert svc.store.resolve("mix") == "mix__c2"
        query = docs[3]["text"]
        steady = [(h.document_id, h.score) for h in search("mix", query, service=svc)]
        spy.swap = (svc.store, "mix", "mix__c1")
        during = search("mix", query, service=svc)
        assert svc.store.resolve("mix") == "mix__c1"  # the swap really happened mid-search
        assert {h.payload["context_version"] for h in during} == {2}
        assert [(h.document_id, h.score) for h in during] == steady
        # the two versions really rank differently, so mixing them would have shown
        after = [(h.document_id, h.score) for h in search("mix", query, service=svc)]
        assert after != steady
    finally:
        svc.close()


# ---- the verbs' errors ------------------------------------------------------------------------------
def test_lifecycle_verbs_refuse_bad_input_clearly(svc: Cdeq) -> None:
    with pytest.raises(NotFound, match="'nothing' does not exist"):
        rebuild_context("nothing", service=svc)
    with pytest.raises(NotFound):
        context_info("nothing", service=svc)
    with pytest.raises(InvalidInput, match="collection: 'Bad Name'"):
        rebuild_context("Bad Name", service=svc)
    ingest_documents("v", corpus(12), service=svc)
    with pytest.raises(InvalidInput, match="sample_size: must be an integer >= 2, got 1") as err:
        rebuild_context("v", sample_size=1, service=svc)
    assert err.value.field == "sample_size"
    with pytest.raises(InvalidInput, match="context_texts: 1 distinct texts") as err:
        rebuild_context("v", context_texts=["same", "same"], service=svc)
    assert err.value.field == "context_texts"
    with pytest.raises(InvalidInput, match="context_texts: must be a list"):
        rebuild_context("v", context_texts="not a list", service=svc)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="drift_sample: must be an integer >= 2"):
        context_info("v", drift=True, drift_sample=0, service=svc)
    with pytest.raises(NotFound, match="no previous context version"):
        rollback("v", service=svc)
    assert prune("v", service=svc) == []


def test_explicit_context_texts_and_drift(svc: Cdeq) -> None:
    ingest_documents("x", corpus(12), service=svc)
    rebuild_context("x", context_texts=[f"context text {i}" for i in range(10)], service=svc)
    info = context_info("x", drift=True, service=svc)
    assert (info.version, info.source, info.trigger) == (2, "explicit", "manual")
    assert info.drift is not None and 0.0 <= info.drift <= 2.0
    assert info.auto_rebuild_due is None  # an explicit context is never replaced automatically


def test_a_collection_stored_without_texts_cannot_be_rebuilt(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    settings = make_settings(tiny_model_dir, tmp_path / "q", min_context_documents=8)
    settings.qdrant.store_text = False
    svc = Cdeq(settings, embedder=embedder)
    try:
        ingest_documents("notext", corpus(12), service=svc)
        with pytest.raises(Conflict, match=r"stored without texts.*STORE_TEXT=false"):
            rebuild_context("notext", service=svc)
        assert svc.store.resolve("notext") == "notext__c1"
        assert svc.store.load_rebuild_marker("notext") is None
    finally:
        svc.close()


def test_drop_collection_removes_every_version(svc: Cdeq) -> None:
    ingest_documents("gone", corpus(12), service=svc)
    rebuild_context("gone", service=svc)
    assert svc.store.physical_collections("gone") == ["gone__c1", "gone__c2"]
    drop_collection("gone", service=svc)
    assert svc.store.physical_collections("gone") == []
    assert svc.store.context_versions("gone", ready_only=False) == []
    with pytest.raises(NotFound):
        drop_collection("gone", service=svc)


# ---- CLI and HTTP ---------------------------------------------------------------------------------
def test_cli_lifecycle_commands(tiny_model_dir: Path, tmp_path: Path) -> None:
    env = {
        "CDEQ_QDRANT__PATH": str(tmp_path / "q"),
        "CDEQ_MODEL__NAME": str(tiny_model_dir),
        "CDEQ_MODEL__DEVICE": "cpu",
        "CDEQ_INGEST__MIN_CONTEXT_DOCUMENTS": "8",
    }
    docs = tmp_path / "docs.jsonl"
    import json

    docs.write_text("\n".join(json.dumps(d) for d in corpus(12)), encoding="utf-8")
    assert cdeq("ingest", str(docs), "--collection", "c", cwd=tmp_path, env=env).returncode == 0
    shown = cdeq("context", "show", "c", "--json", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["version"] == 1
    rebuilt = cdeq("context", "rebuild", "c", cwd=tmp_path, env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "12/12 stored" in rebuilt.stdout
    text = cdeq("context", "show", "c", "--drift", cwd=tmp_path, env=env)
    assert "context v2 (rebuild, manual)" in text.stdout and "drift" in text.stdout
    assert "v1 is live again" in cdeq("context", "rollback", "c", cwd=tmp_path, env=env).stdout
    assert "removed v2" in cdeq("context", "prune", "c", cwd=tmp_path, env=env).stdout
    ids = tmp_path / "ids.txt"
    ids.write_text("d1\nd2\n", encoding="utf-8")
    deleted = cdeq("delete", "c", "d0", "--ids-file", str(ids), cwd=tmp_path, env=env)
    assert deleted.stdout.strip() == "deleted 3 of 3 documents from c"
    refused = cdeq("drop-collection", "c", cwd=tmp_path, env=env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert cdeq("drop-collection", "c", "--yes", cwd=tmp_path, env=env).returncode == 0
    missing = cdeq("context", "show", "c", cwd=tmp_path, env=env)
    assert missing.returncode == 3 and "does not exist" in missing.stderr


def test_http_lifecycle_routes(svc: Cdeq) -> None:
    from app.config import ApiSettings

    svc.settings.api = ApiSettings(keys=["rw-key"], read_only_keys=["ro-key"])  # type: ignore[list-item]
    app = create_app(svc.settings, svc)
    rw = {"Authorization": "Bearer rw-key"}
    ro = {"Authorization": "Bearer ro-key"}
    ingest_documents("h", corpus(12), service=svc)
    with TestClient(app) as client:
        got = client.get("/v1/collections/h/context", headers=ro)
        assert got.status_code == 200 and got.json()["version"] == 1
        assert_error(client.post("/v1/collections/h/context/rebuild", headers=ro), 403)
        done = client.post("/v1/collections/h/context/rebuild", headers=rw)
        assert done.status_code == 200 and done.json()["state"] == "done"
        assert client.get("/v1/collections/h/context", headers=ro).json()["version"] == 2
        bad = client.post("/v1/collections/h/context/rebuild", headers=rw, json={"sample_size": 1})
        assert_error(bad, 400, "sample_size")
        back = client.post("/v1/collections/h/context/rollback", headers=rw)
        assert back.json() == {"collection": "h", "version": 1}
        assert client.post("/v1/collections/h/context/prune", headers=rw).json()["removed"] == [2]
        assert_error(client.post("/v1/collections/h/context/rollback", headers=rw), 404)
        drift = client.get("/v1/collections/h/context?drift=true", headers=ro).json()["drift"]
        assert isinstance(drift, float)
        metrics = client.get("/metrics").text
        assert 'cdeq_context_rebuilds_total{trigger="manual"} 1.0' in metrics
        assert client.delete("/v1/collections/h", headers=rw).json()["dropped"] is True
        assert_error(client.delete("/v1/collections/h", headers=rw), 404)
        assert_error(client.get("/v1/collections/h/context", headers=ro), 404)


# ---- model identity ----------------------------------------------------------------------------
def test_another_model_is_refused_until_the_collection_is_rebuilt_with_it(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    from app.embeddings import InputType, embed_texts
    from app.errors import ModelMismatch
    from app.model.tiny import make_checkpoint

    other_dir = make_checkpoint(tmp_path / "other", size="tiny", seed=2)
    other = CdeEmbedder.from_pretrained(other_dir, device="cpu", dtype="float32")
    assert other.fingerprint != embedder.fingerprint  # same shapes, other weights
    docs = corpus(12)
    first = _service(tiny_model_dir, tmp_path / "q", embedder, auto_rebuild=False)
    ingest_documents("m", docs, service=first)
    first.close()
    svc = _service(other_dir, tmp_path / "q", other, auto_rebuild=False)
    try:
        with pytest.raises(ModelMismatch, match="was embedded with model") as err:
            search("m", "river", service=svc)
        assert embedder.fingerprint[:12] in str(err.value)
        with pytest.raises(ModelMismatch):  # drift by another model's stage 1 means nothing
            context_info("m", drift=True, service=svc)
        assert context_info("m", service=svc).version == 1  # inspecting is fine
        with pytest.raises(ModelMismatch):
            ingest_documents("m", corpus(14)[12:], service=svc)
        assert svc.store.count("m") == 12  # nothing recorded, nothing written
        with pytest.raises(ModelMismatch):
            embed_texts(["river"], [InputType.QUERY], collection="m", service=svc)
        app = create_app(svc.settings, svc)
        with TestClient(app) as client:
            body = {"input": "river", "collection": "m"}
            error = assert_error(client.post("/v1/embeddings", json=body), 409)
            assert error["code"] == "model_mismatch"
        # a rebuild with the new model moves the collection to it
        rebuild_context("m", service=svc)
        hits = search("m", docs[0]["text"], service=svc)
        assert {h.payload["context_version"] for h in hits} == {2} and len(hits) == 10
        assert svc.store.load_context("m", 2).fingerprint == other.fingerprint  # type: ignore[union-attr]
        with pytest.raises(ModelMismatch):
            rollback("m", service=svc)  # version 1 belongs to the other model
    finally:
        svc.close()


def test_cli_exit_code_for_another_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    import json

    from app.model.tiny import make_checkpoint

    other_dir = make_checkpoint(tmp_path / "other", size="tiny", seed=2)
    env = {"CDEQ_QDRANT__PATH": str(tmp_path / "q"), "CDEQ_MODEL__DEVICE": "cpu"}
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps(d) for d in corpus(12)), encoding="utf-8")
    ingested = cdeq(
        "ingest",
        str(docs),
        "--collection",
        "m",
        "--model",
        str(tiny_model_dir),
        cwd=tmp_path,
        env=env,
    )
    assert ingested.returncode == 0, ingested.stderr
    refused = cdeq("search", "m", "river", "--model", str(other_dir), cwd=tmp_path, env=env)
    assert refused.returncode == 6 and "was embedded with model" in refused.stderr
