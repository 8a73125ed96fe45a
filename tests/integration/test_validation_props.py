"""Property: validation accepts exactly what the pipeline can carry. Any document list it
accepts is queued, embedded and stored by a real worker (the job finishes `done`, every
document readable back as given); anything it refuses leaves Redis exactly as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.documents import validate_documents
from app.errors import InvalidInput
from app.ingest import enqueue
from app.jobs.recovery import RECONCILE_LOCK
from app.model import CdeEmbedder
from app.service import Cdeq
from tests.helpers.builders import make_settings, wait_finished
from tests.integration.conftest import redis_url
from workers.celery_app import create_app, set_worker_service

REDIS_URL = redis_url(13)
COLLECTION = "props"
MAX_TEXT_CHARS = 200
MAX_METADATA_BYTES = 400

# Text that is sometimes not valid Unicode (lone surrogates) or odd (NUL, controls, non-BMP).
odd_text = st.text(
    alphabet=st.sampled_from(["a", " ", "é", "\x00", "\x1f", "\ud800", "\udfff", "😀", "\u2028"]),
    max_size=12,
)
# Weighted towards valid values (repeated), so that both sides of the property get examples.
words = st.text(alphabet="abc xyzé😀", min_size=1, max_size=30)
text = st.one_of(words, words, words, st.text(max_size=30), odd_text)
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(),
    words,
    text,
)
key = st.one_of(st.text(max_size=6), st.text(max_size=6), odd_text, st.integers(-3, 3))
unique_id = st.uuids().map(str)
doc_id = st.one_of(
    unique_id, unique_id, unique_id, st.text(max_size=8), odd_text, st.integers(-(2**60), 2**60)
)


def nest(levels: int) -> Any:
    value: Any = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


metadata = st.one_of(
    st.recursive(
        leaf,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(key, children, max_size=3)
        ),
        max_leaves=12,
    ),
    st.integers(min_value=28, max_value=36).map(nest),
    st.integers(min_value=100, max_value=600).map(lambda n: {"pad": "x" * n}),
)
document = st.fixed_dictionaries(
    {"id": doc_id, "text": text},
    optional={"metadata": metadata},
)


def snapshot(client: redis.Redis) -> tuple[set[bytes], int]:
    """Every key and the queue length, but the reconciler's lock: the worker's keeper takes
    and drops it on its own clock, whatever the test submits."""
    keys = set(client.keys("*")) - {RECONCILE_LOCK.encode()}
    return keys, int(client.llen("ingest"))


@pytest.mark.slow
def test_validation_accepts_exactly_what_is_stored(
    tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    svc = Cdeq(
        make_settings(
            tiny_model_dir,
            tmp_path / "qdrant",
            redis_url=REDIS_URL,
            max_text_chars=MAX_TEXT_CHARS,
            max_metadata_bytes=MAX_METADATA_BYTES,
        ),
        embedder=embedder,
    )
    app = create_app(svc.settings)
    set_worker_service(svc)
    seen = {"accepted": 0, "refused": 0}

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(document, min_size=1, max_size=4))
    def check(documents: list[dict[str, Any]]) -> None:
        try:
            docs = validate_documents(
                COLLECTION,
                documents,
                max_documents=100,
                max_text_chars=MAX_TEXT_CHARS,
                max_metadata_bytes=MAX_METADATA_BYTES,
            )
        except InvalidInput:
            seen["refused"] += 1
            before = snapshot(client)
            with pytest.raises(InvalidInput):
                enqueue(COLLECTION, documents, service=svc)
            assert snapshot(client) == before
            return
        seen["accepted"] += 1
        job_id = enqueue(COLLECTION, documents, service=svc)
        status = wait_finished(job_id, svc, timeout=60)  # never stuck
        assert (status.state, status.succeeded, status.failed) == ("done", len(docs), 0), status
        stored = svc.store.get_documents(COLLECTION, [d.id for d in docs])
        for doc in docs:
            assert stored[doc.id]["text"] == doc.text
            assert stored[doc.id]["metadata"] == doc.metadata

    try:
        with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
            check()
    finally:
        set_worker_service(None)
        svc.close()
        client.flushdb()
        client.close()
    assert seen["accepted"] >= 5 and seen["refused"] >= 5, seen  # both sides were exercised
