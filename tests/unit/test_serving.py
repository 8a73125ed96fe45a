"""The model server (app.serving) over the real tiny model: packing across callers never
changes a vector, the token-bounded queue refuses instead of losing work, a caller that gives
up or a bad request does not spoil a batch, and the query cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from app.config import ServeSettings
from app.errors import InvalidInput, Overloaded
from app.model import CdeEmbedder
from app.serving import DOCUMENT, QUERY, ServedEmbedder
from app.serving.batcher import Batcher
from tests.helpers.builders import cosine
from tests.helpers.faults import GatedEmbedder, PoisonEmbedder
from tests.helpers.texts import topical_texts


class Recorder:
    """A ServeObserver that keeps what it is told."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []
        self.hits = self.misses = self.rejections = 0

    def batch(self, rows: int, tokens: int, waits_s: Sequence[float], forward_s: float) -> None:
        self.batches.append((rows, tokens))

    def cache(self, hits: int, misses: int) -> None:
        self.hits += hits
        self.misses += misses

    def rejected(self) -> None:
        self.rejections += 1


@pytest.fixture(scope="module")
def contexts(embedder: CdeEmbedder) -> dict[str, np.ndarray]:
    """Two different contexts, as two collections would have."""
    return {
        "rivers": embedder.embed_context(topical_texts(40, seed=3)),
        "ships": embedder.embed_context(topical_texts(40, seed=4)),
    }


@pytest.fixture(params=[1, 2], ids=["one-model-thread", "two-model-threads"])
def served(embedder: CdeEmbedder, request: pytest.FixtureRequest) -> Iterator[ServedEmbedder]:
    settings = ServeSettings(max_wait_ms=1000, max_batch=12, model_threads=request.param)
    server = ServedEmbedder(embedder, settings)
    yield server
    server.close()


def until(condition: Any, what: str) -> None:
    """Wait (bounded) for something another thread does; not a timed assertion."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


@pytest.mark.parametrize("threads", [1, 2], ids=["one-model-thread", "two-model-threads"])
def test_concurrent_callers_get_exactly_their_own_vectors(
    embedder: CdeEmbedder, contexts: dict[str, np.ndarray], threads: int
) -> None:
    gated = GatedEmbedder(embedder)
    served = ServedEmbedder(
        gated, ServeSettings(max_wait_ms=1000, max_batch=12, model_threads=threads)
    )
    recorder = Recorder()
    served.add_observer(recorder)
    texts = topical_texts(48, seed=9)
    # 16 callers: 2 contexts × 2 input types, 1–4 texts each, short and long (truncated)
    jobs = []
    for i in range(16):
        name = "rivers" if i % 2 else "ships"
        kind = QUERY if (i // 2) % 2 else DOCUMENT
        mine = [texts[(3 * i + j) % 48] * (1 + 40 * (j % 2)) for j in range(1 + i % 4)]
        jobs.append((name, kind, mine))
    results: list[Any] = [None] * len(jobs)

    def call(i: int) -> None:
        name, kind, mine = jobs[i]
        run = served.embed_queries if kind == QUERY else served.embed_documents
        results[i] = run(mine, contexts[name])

    # A forward held still keeps the model busy while all 16 callers queue behind it, so what
    # gets packed does not depend on thread timing.
    held = threading.Thread(target=lambda: served.embed_queries(["held"], contexts["ships"]))
    held.start()
    try:
        assert gated.entered.wait(30)
        threads_ = [threading.Thread(target=call, args=(i,)) for i in range(len(jobs))]
        for t in threads_:
            t.start()
        total = sum(sum(served.costs(mine, kind)) for _, kind, mine in jobs)
        total += sum(served.costs(["held"], QUERY))
        until(lambda: served.queued_tokens == total, "all 16 callers to be queued")
        gated.gate.set()
        for t in [held, *threads_]:
            t.join(60)
    finally:
        gated.gate.set()
        served.close()
    for (name, kind, mine), got in zip(jobs, results, strict=True):
        for j, text in enumerate(mine):  # against the library, one text at a time
            run = embedder.embed_queries if kind == QUERY else embedder.embed_documents
            alone = run([text], contexts[name])
            assert cosine(got.vectors[j], alone.vectors[0]) >= 0.99999
            assert got.token_counts[j] == alone.token_counts[0]
            assert got.truncated[j] == alone.truncated[0]
    assert any(r.truncated[1] for r in results if len(r) > 1)  # long ones were cut, and said so
    # callers were really packed together: some forward ran more rows than any one caller sent
    assert max(rows for rows, _ in recorder.batches) > 4, recorder.batches
    assert served.queued_tokens == 0


def test_full_queue_refuses_at_once_and_loses_nothing(
    embedder: CdeEmbedder, contexts: dict[str, np.ndarray]
) -> None:
    gated = GatedEmbedder(embedder)
    texts = ["where do rivers end?", "what do ships carry?"]
    cost = sum(ServedEmbedder(gated, ServeSettings()).costs(texts, QUERY))
    server = ServedEmbedder(gated, ServeSettings(max_wait_ms=0, max_queue_tokens=cost + 10))
    recorder = Recorder()
    server.add_observer(recorder)
    got: list[Any] = []
    try:
        first = threading.Thread(
            target=lambda: got.append(server.embed_queries(texts, contexts["rivers"]))
        )
        first.start()
        assert gated.entered.wait(30)  # its forward runs (held): its tokens are in the queue
        with pytest.raises(Overloaded) as refused:
            server.embed_queries(["one more"], contexts["rivers"])
        assert refused.value.retry_after_s >= 1 and "queue is full" in str(refused.value)
        assert recorder.rejections == 1
        gated.gate.set()
        first.join(30)
        want = embedder.embed_queries(texts, contexts["rivers"]).vectors
        assert (cosine(got[0].vectors, want) >= 0.99999).all()  # the admitted one is intact
        after = server.embed_queries(["one more"], contexts["rivers"])  # room again
        assert len(after) == 1 and server.queued_tokens == 0
    finally:
        gated.gate.set()
        server.close()


def test_waiting_for_room_waits_instead_of_refusing(
    embedder: CdeEmbedder, contexts: dict[str, np.ndarray]
) -> None:
    gated = GatedEmbedder(embedder)
    server = ServedEmbedder(gated, ServeSettings(max_wait_ms=0, max_queue_tokens=1))
    try:
        threading.Thread(
            target=lambda: server.embed_documents(["held"], contexts["ships"])
        ).start()  # larger than the whole bound: admitted alone, into an empty queue
        assert gated.entered.wait(30)
        out: list[Any] = []

        def bulk() -> None:
            with server.waiting_for_room():
                out.append(server.embed_documents(["accepted work"], contexts["ships"]))

        waiter = threading.Thread(target=bulk)
        waiter.start()
        with pytest.raises(Overloaded):
            server.check_room()
        gated.gate.set()
        waiter.join(30)
        assert len(out) == 1 and len(out[0]) == 1
    finally:
        gated.gate.set()
        server.close()


def test_a_caller_that_gives_up_does_not_spoil_the_batch(
    embedder: CdeEmbedder, contexts: dict[str, np.ndarray]
) -> None:
    gated = GatedEmbedder(embedder)
    # one model thread, so the later requests really wait behind the held one
    server = ServedEmbedder(gated, ServeSettings(max_wait_ms=0, model_threads=1))
    context = contexts["rivers"]
    key = (server.context_key(context), QUERY)
    try:
        held = server.submit(["first"], server.costs(["first"], QUERY), context, key)
        assert gated.entered.wait(30)  # running; the next two wait behind it
        left = server.submit(["gone"], server.costs(["gone"], QUERY), context, key)
        stays = ["stays one", "stays two"]
        kept = server.submit(stays, server.costs(stays, QUERY), context, key)
        assert all(f.cancel() for f in left)  # the caller gives up while it waits
        gated.gate.set()
        assert len(held[0].result(30)) == 1
        out = kept[0].result(30)
        want = embedder.embed_queries(stays, context).vectors
        assert (cosine(out.vectors, want) >= 0.99999).all()
        assert ["gone"] not in gated.calls and all("gone" not in c for c in gated.calls)
        until(lambda: server.queued_tokens == 0, "the given-up part's tokens to be freed")
    finally:
        gated.gate.set()
        server.close()


def test_a_bad_request_fails_alone(embedder: CdeEmbedder, contexts: dict[str, np.ndarray]) -> None:
    gated = GatedEmbedder(PoisonEmbedder(embedder, "poison pill"))
    server = ServedEmbedder(gated, ServeSettings(max_wait_ms=0, max_batch=3, model_threads=1))
    outcomes: list[Any] = [None] * 3
    inputs = [["good one"], ["poison pill"], ["good two"]]

    def call(i: int) -> None:
        try:
            outcomes[i] = server.embed_documents(inputs[i], contexts["ships"])
        except InvalidInput as exc:
            outcomes[i] = exc

    try:
        held = threading.Thread(target=lambda: server.embed_documents(["held"], contexts["ships"]))
        held.start()
        assert gated.entered.wait(30)  # the model is busy: the three queue behind it
        threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        until(lambda: server.queued_requests == 3, "the three requests to be queued")
        gated.gate.set()
        for t in [held, *threads]:
            t.join(60)
        assert sorted(gated.calls[1]) == ["good one", "good two", "poison pill"]  # packed
        assert isinstance(outcomes[1], InvalidInput)
        for i in (0, 2):
            want = embedder.embed_documents(inputs[i], contexts["ships"]).vectors
            assert cosine(outcomes[i].vectors[0], want[0]) >= 0.99999
        # invalid input never reaches the queue: it fails in the caller
        with pytest.raises(InvalidInput):
            server.embed_queries(["   "], contexts["ships"])
        assert server.queued_tokens == 0
    finally:
        server.close()


def test_query_cache_hits_identically_and_a_new_context_misses(
    served: ServedEmbedder, embedder: CdeEmbedder, contexts: dict[str, np.ndarray]
) -> None:
    recorder = Recorder()
    served.add_observer(recorder)
    first = served.embed_queries(["cached question", "another"], contexts["rivers"])
    again = served.embed_queries(["cached question"], contexts["rivers"])
    assert (recorder.hits, recorder.misses) == (1, 2)
    np.testing.assert_array_equal(again.vectors[0], first.vectors[0])
    assert again.token_counts[0] == first.token_counts[0]
    forwards = len(recorder.batches)
    # the same text under another context (a swapped-in version): a miss, and its own vector
    swapped = contexts["ships"].copy()
    other = served.embed_queries(["cached question"], swapped)
    assert recorder.misses == 3 and len(recorder.batches) == forwards + 1
    want = embedder.embed_queries(["cached question"], contexts["ships"]).vectors[0]
    assert cosine(other.vectors[0], want) >= 0.99999
    # documents are not cached; the hit ratio is what the metrics show
    served.embed_documents(["cached question"], contexts["rivers"])
    assert recorder.hits == 1 and served.cache_hit_ratio() == pytest.approx(1 / 4)


def test_cache_is_bounded_and_can_be_off(
    embedder: CdeEmbedder, contexts: dict[str, np.ndarray]
) -> None:
    small = ServedEmbedder(embedder, ServeSettings(cache_size=2, max_wait_ms=0))
    off = ServedEmbedder(embedder, ServeSettings(cache_size=0, batching=False))
    try:
        small.embed_queries(["a one", "b two", "c three"], contexts["rivers"])
        assert small.cache_entries == 2
        recorder = Recorder()
        off.add_observer(recorder)
        off.embed_queries(["a one"], contexts["rivers"])
        off.embed_queries(["a one"], contexts["rivers"])
        assert off.cache_entries == 0 and len(recorder.batches) == 2  # per-request path
    finally:
        small.close()
        off.close()


@pytest.mark.parametrize(
    ("cpu", "sizes"),
    [
        (False, [3, 3, 2]),  # GPU: waiting rows ÷ idle threads (3 idle, then 2, then 1)
        (True, [3, 2, 1]),  # CPU: waiting rows ÷ model threads (3), whatever is busy
    ],
    ids=["gpu", "cpu"],
)
def test_a_model_thread_takes_its_share_of_the_waiting_rows(
    embedder: CdeEmbedder, contexts: dict[str, np.ndarray], cpu: bool, sizes: list[int]
) -> None:
    """The packing rule alone (Batcher.take, no model threads started): a thread leaves the
    other model threads their share of the waiting rows, in order."""
    batcher = Batcher(
        lambda kind, texts, dataset: embedder.embed_queries(texts, dataset),
        ServeSettings(max_batch=16, model_threads=3),
        max_batch_tokens=100_000,
        observers=[],
        cpu=cpu,
    )
    context = contexts["rivers"]
    key = ("rivers", QUERY)
    for i in range(8):  # eight one-text callers waiting
        batcher._pending.extend(batcher._split([f"question {i}"], [140], context, key))
    other = batcher._split(["a document"], [140], context, ("rivers", DOCUMENT))
    batcher._pending.extend(other)  # another key: never packed with queries
    taken = []
    with batcher._cond:
        for busy in (0, 1, 2):  # three idle threads, then two, then one
            batcher._busy = busy
            taken.append([t for part in batcher.take(key) for t in part.texts])
    assert [len(t) for t in taken] == sizes
    assert [t for ts in taken for t in ts] == [f"question {i}" for i in range(sum(sizes))]
    assert list(batcher._pending)[-1] == other[0]


def test_an_idle_model_starts_at_once(
    embedder: CdeEmbedder, contexts: dict[str, np.ndarray]
) -> None:
    """max_wait applies only while another forward runs: a lone request on an idle server
    does not wait the configured second for company."""
    server = ServedEmbedder(embedder, ServeSettings(max_wait_ms=1000, model_threads=1))
    recorder = Recorder()
    server.add_observer(recorder)
    waits: list[float] = []
    recorder.batch = lambda rows, tokens, w, forward_s: waits.extend(w)  # type: ignore[method-assign]
    try:
        server.embed_queries(["alone"], contexts["rivers"])
        assert len(waits) == 1 and waits[0] < 0.5, waits  # well under the 1 s max_wait
    finally:
        server.close()


def test_forwards_at_once_share_the_cpu_cores(
    embedder: CdeEmbedder, contexts: dict[str, np.ndarray]
) -> None:
    """On a CPU a lone forward uses every core; one that starts while another runs uses its
    share, so two forwards do not oversubscribe the cores."""
    import torch

    cores = torch.get_num_threads()
    seen: dict[str, int] = {}
    entered, gate = threading.Event(), threading.Event()

    def forward(kind: str, texts: list[str], dataset: Any) -> Any:
        seen[texts[0]] = torch.get_num_threads()  # this model thread's team size
        if texts[0] == "first":
            entered.set()
            assert gate.wait(30)
        return embedder.embed_queries(texts, dataset)

    batcher = Batcher(forward, ServeSettings(max_wait_ms=0, model_threads=2), 100_000, [], cpu=True)
    context = contexts["rivers"]
    key = ("rivers", QUERY)
    try:
        first = batcher.submit(["first"], [140], context, key)
        assert entered.wait(30)
        second = batcher.submit(["second"], [140], context, key)
        assert len(second[0].result(30)) == 1  # ran while the first one was still running
        gate.set()
        assert len(first[0].result(30)) == 1
        assert seen == {"first": cores, "second": max(1, cores // 2)}
        # ...and threads started afterwards still get every core by default
        later: list[int] = []

        def fresh() -> None:
            torch.ones(64, 64) @ torch.ones(64, 64)  # its first parallel work
            later.append(torch.get_num_threads())

        thread = threading.Thread(target=fresh)
        thread.start()
        thread.join(30)
        assert later == [cores] and torch.get_num_threads() == cores
    finally:
        gate.set()
        batcher.close()
