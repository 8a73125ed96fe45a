"""Hybrid search costs (#18): search latency per mode, and ingest throughput with BM25 on/off.

    .venv/bin/python bench/hybrid.py [--points 10000,50000] [--queries 200]
                                     [--ingest-docs 600] [--model DIR | --size tiny|full]
    .venv/bin/python bench/hybrid.py --dry-run        # 500 points, 20 queries, 64 documents

1. Search latency: a collection of N points in local storage (a temporary folder), each a
   real text of bench/data/docs.txt (repeated with shuffled words past 600) with a random unit
   dense vector of the model's size and its real BM25 vector (the dense vectors are random so
   that 50k points need no stage 2; a dense search costs the same whatever the values). Each
   query is timed in the store alone (`QdrantStore.search` with precomputed query vectors),
   median and p95 per mode; the query's own stage 2 (dense and hybrid pay it, sparse does
   not) is timed apart.
2. Ingest throughput: the same documents ingested in process (stage 2 + upsert) with
   CDEQ_SEARCH__SPARSE true and false, alternating, best of --repeats; the ratio on/off must
   be ≥ 0.95 (BM25 nearly free next to stage 2).
3. nDCG@10 per mode needs `cdeq eval` and its labelled set: not measured here.

Writes nothing outside its temporary folder; run it alone (timings).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from app.config import Settings  # noqa: E402
from app.ingest import ingest_documents  # noqa: E402
from app.model.tiny import make_checkpoint  # noqa: E402
from app.query import create_collection  # noqa: E402
from app.service import Cdeq  # noqa: E402
from app.sparse import document_sparse, query_sparse  # noqa: E402
from app.store import PointRecord, Ranking  # noqa: E402

CORPUS = ROOT / "bench" / "data" / "docs.txt"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def texts(n: int, seed: int = 0) -> list[str]:
    base = [t for t in CORPUS.read_text(encoding="utf-8").split("\n") if t.strip()]
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = base[i % len(base)]
        if i >= len(base):  # a new document, same vocabulary
            words = text.split()
            rng.shuffle(words)
            text = " ".join(words)
        out.append(text)
    return out


def service(model: str, folder: Path, *, sparse: bool = True) -> Cdeq:
    return Cdeq(
        Settings(
            model={"name": model, "device": "cpu"},
            redis={"url": None},
            qdrant={"path": str(folder)},
            search={"sparse": sparse},
        )
    )


def search_latency(model: str, n: int, queries: int, tmp: Path) -> list[str]:
    svc = service(model, tmp / f"search-{n}")
    try:
        create_collection("bench", service=svc)  # the generic context: no stage 2 over N texts
        context = svc.contexts.current("bench")
        dim, rng = svc.store.dim, np.random.default_rng(0)
        corpus = texts(n)
        log(f"{n} points: writing")
        for start in range(0, n, 1000):
            chunk = corpus[start : start + 1000]
            vectors = rng.normal(size=(len(chunk), dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            sparse = document_sparse(svc, context.physical, chunk)
            assert sparse is not None
            svc.store.upsert(
                context.physical,
                [
                    PointRecord(
                        f"d{start + i}",
                        v,
                        t,
                        {},
                        "",
                        context.version,
                        sparse=sparse[i][0],
                        sparse_terms=sparse[i][1],
                    )
                    for i, (t, v) in enumerate(zip(chunk, vectors, strict=True))
                ],
            )
        qrng = random.Random(1)
        picked = [
            " ".join(qrng.sample(t.split(), min(4, len(t.split()))))
            for t in qrng.sample(corpus, queries)
        ]
        started = time.perf_counter()
        dense = svc.embedder.embed_queries(picked, context.dataset_embeddings).vectors
        embed_ms = (time.perf_counter() - started) * 1000 / queries
        sparse_q = [query_sparse(svc, context.physical, q) for q in picked]
        rows = []
        for mode in ("dense", "sparse", "hybrid"):
            ranking = Ranking(mode=mode)  # type: ignore[arg-type]
            times = []
            for i in range(queries):
                t0 = time.perf_counter()
                svc.store.search(
                    "bench",
                    dense[i],
                    10,
                    physical=context.physical,
                    sparse=sparse_q[i],
                    ranking=ranking,
                )
                times.append((time.perf_counter() - t0) * 1000)
            times.sort()
            p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
            rows.append(
                f"| {n} | {mode} | {statistics.median(times):.2f} | {p95:.2f} | "
                f"{embed_ms if mode != 'sparse' else 0.0:.2f} |"
            )
            log(rows[-1])
        return rows
    finally:
        svc.close()


def ingest_ratio(model: str, n: int, repeats: int, tmp: Path) -> tuple[float, float]:
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(texts(n, seed=2))]
    best = {True: 0.0, False: 0.0}
    for r in range(repeats):
        for sparse in (True, False):
            svc = service(model, tmp / f"ingest-{r}-{sparse}", sparse=sparse)
            try:
                svc.embedder  # noqa: B018 (loading the model is not ingest)
                t0 = time.perf_counter()
                status = ingest_documents("bench", docs, service=svc)
                rate = status.succeeded / (time.perf_counter() - t0)
            finally:
                svc.close()
            best[sparse] = max(best[sparse], rate)
            log(f"ingest sparse={sparse}: {rate:.1f} docs/s")
    return best[True], best[False]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", default="10000,50000", help="collection sizes, comma-separated")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ingest-docs", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", help="checkpoint folder (default: a random one of --size)")
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--dry-run", action="store_true", help="500 points, 20 queries, 64 docs")
    args = parser.parse_args()
    if args.dry_run:
        args.points, args.queries, args.ingest_docs, args.repeats = "500", 20, 64, 1
    sizes = [int(p) for p in args.points.split(",") if p.strip()]
    with tempfile.TemporaryDirectory(prefix="cdeq-bench-hybrid-") as folder:
        tmp = Path(folder)
        model = args.model or str(make_checkpoint(tmp / "model", size=args.size, seed=1))
        rows = []
        for n in sizes:
            rows += search_latency(model, n, args.queries, tmp)
        on, off = ingest_ratio(model, args.ingest_docs, args.repeats, tmp)
    print("| points | mode | store median ms | store p95 ms | query stage 2 ms |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print(
        f"ingest ({args.ingest_docs} docs, in process, best of {args.repeats}): sparse on "
        f"{on:.1f} docs/s, off {off:.1f} docs/s, ratio {on / off:.3f} (target ≥ 0.95)"
    )
    print("nDCG@10 per mode: run `cdeq eval` (not measured here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
