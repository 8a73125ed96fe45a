"""Long documents through the queue path (Redis job records, leased deliveries, the workers'
`process_batch`): chunked like in-process jobs, found by a passage near their end, trimmed on
a shorter re-ingest and deleted whole. Real Redis, tiny model, local Qdrant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.ingest import job_status, submit
from app.model import CdeEmbedder
from app.query import delete_documents, search
from app.service import Cdeq
from tests.helpers.builders import make_settings
from tests.integration.conftest import flushed, redis_url
from tests.integration.test_api_queued import RunHere
from tests.unit.test_long_documents import BUDGET, OVERLAP, long_documents, passages

REDIS_URL = redis_url(15)


@pytest.fixture()
def queued(tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path) -> Iterator[Cdeq]:
    for _ in flushed(15):
        settings = make_settings(
            tiny_model_dir,
            tmp_path / "qdrant",
            redis_url=REDIS_URL,
            chunk_tokens=BUDGET,
            chunk_overlap_tokens=OVERLAP,
        )
        here = RunHere()
        svc = Cdeq(settings, embedder=embedder, dispatcher=here)  # type: ignore[arg-type]
        here.service = svc
        yield svc
        svc.close()


def test_queued_long_documents_are_chunked_found_trimmed_and_deleted(queued: Cdeq) -> None:
    svc = queued
    assert svc.queued
    docs = long_documents(6, seed=11)
    status = job_status(submit("qlong", docs, service=svc), service=svc)
    assert (status.state, status.succeeded, status.truncated) == ("done", 6, 0)
    assert status.chunks == svc.store.count("qlong") > 6 * 5
    for doc_id, index, chunk in passages(svc, docs):
        (top,) = search("qlong", chunk, top_k=1, service=svc)
        assert (top.document_id, top.chunk_index) == (doc_id, index)
    short = {**docs[2], "text": str(docs[2]["text"])[:300]}
    status = job_status(submit("qlong", [short], service=svc), service=svc)
    assert status.chunks == len(svc.embedder.chunk(str(short["text"]), budget=BUDGET).spans)
    hits = search("qlong", str(short["text"]), top_k=6, group=False, service=svc)
    assert all(h.chunk_count == status.chunks for h in hits if h.document_id == "long-2")
    before = svc.store.count("qlong")
    assert delete_documents("qlong", ["long-2"], service=svc) == 1
    assert svc.store.count("qlong") == before - status.chunks
    assert svc.store.count_documents("qlong") == 5
