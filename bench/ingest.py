"""End-to-end ingest throughput (Redis → Celery worker process → Qdrant) against the
embedder's own throughput on the same documents and model, in the same run.

    .venv/bin/python bench/ingest.py --redis-url redis://127.0.0.1:6379/13 [--flush]
                                     [--corpus FILE] [--n-docs N] [--model DIR | --size tiny|full]
                                     [--batch-size B] [--dry-run]

The collection's context is built first (stage 1, once) and timed apart; the ingest job is
then timed from `enqueue` to the job's `done`, with a worker already started. The worker is
a real `cdeq worker --concurrency 1` process; Qdrant is local mode (owned by the worker while it
runs). Prints one markdown table; progress goes to stderr.

The corpus is bench/data/docs.txt (600 real texts) unless --corpus names another file.
The Redis database of --redis-url must be empty: the bench refuses one that holds keys,
unless --flush asks it to empty that database first. At the end it deletes the keys its
run created (cdeq's job records and locks, Celery's broker keys), and nothing else.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import torch  # noqa: E402

from app.config import Settings  # noqa: E402
from app.documents import Document  # noqa: E402
from app.ingest import enqueue, job_status  # noqa: E402
from app.jobs import split  # noqa: E402
from app.model.tiny import make_checkpoint  # noqa: E402
from app.query import create_collection  # noqa: E402
from app.service import Cdeq  # noqa: E402

DEFAULT_CORPUS = ROOT / "bench" / "data" / "docs.txt"  # 600 real texts; see bench/data/README.md
# What a run writes to Redis: cdeq's job records and context locks, and Celery's broker keys
# (queues, kombu bindings, unacked-message bookkeeping). Cleanup deletes only keys created
# during the run that match these.
RUN_KEY_PATTERNS = ("cdeq:*", "celery*", "_kombu.*", "unacked*", "ingest*")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def corpus_texts(path: Path, n: int, seed: int) -> list[str]:
    lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    rng = random.Random(seed)
    return [
        rng.choice(lines) if n > len(lines) else t for t in rng.sample(lines, min(n, len(lines)))
    ] + [rng.choice(lines) for _ in range(max(0, n - len(lines)))]


def redis_keys(rdb: redis.Redis) -> set[bytes]:
    return set(rdb.scan_iter(count=1000))


def delete_run_keys(rdb: redis.Redis, before: set[bytes]) -> None:
    """Delete the keys that appeared since `before` and that this run writes (RUN_KEY_PATTERNS)."""
    created = {
        key
        for pattern in RUN_KEY_PATTERNS
        for key in rdb.scan_iter(match=pattern, count=1000)
        if key not in before
    }
    if created:
        rdb.delete(*created)
    others = redis_keys(rdb) - before
    log(f"redis: deleted the {len(created)} keys this run created")
    if others:
        names = ", ".join(sorted(k.decode(errors="replace") for k in others)[:5])
        log(f"redis: kept {len(others)} key(s) that something else created meanwhile: {names}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--redis-url",
        required=True,
        help="an empty Redis database for the queue and job records, e.g. redis://127.0.0.1:6379/13",
    )
    parser.add_argument(
        "--flush",
        action="store_true",
        help="empty that database first if it holds keys (FLUSHDB on it, nothing else)",
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        default=DEFAULT_CORPUS,
        help="one text per line (default: bench/data/docs.txt, 600 texts of the CDE authors' "
        "random_docs.txt; pass that whole file for all 4,364)",
    )
    parser.add_argument("--n-docs", type=int, default=2000)
    parser.add_argument("--model", help="checkpoint folder (default: a random one of --size)")
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--batch-size", type=int, default=64, help="documents per worker task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="a check in a minute: the tiny model, 40 documents in batches of 16",
    )
    args = parser.parse_args()
    if args.dry_run:
        args.n_docs, args.batch_size = min(args.n_docs, 40), min(args.batch_size, 16)
        args.size = "tiny" if args.model is None else args.size
    if not args.corpus.is_file():
        parser.error(f"--corpus {args.corpus}: no such file")

    rdb = redis.Redis.from_url(args.redis_url)
    db = rdb.connection_pool.connection_kwargs.get("db", 0)
    try:
        held = rdb.dbsize()
    except redis.RedisError as exc:
        raise SystemExit(f"redis at {args.redis_url}: {exc}") from exc
    if held and not args.flush:
        raise SystemExit(
            f"redis database {db} of {args.redis_url} holds {held} key(s); this bench needs an "
            "empty one. Name another with --redis-url (the database number is the path, "
            "e.g. redis://127.0.0.1:6379/13), or add --flush to empty this one first."
        )
    if held:
        log(f"redis: --flush: emptying database {db} ({held} key(s))")
        rdb.flushdb()
    before = redis_keys(rdb)
    try:
        return run(args)
    finally:
        delete_run_keys(rdb, before)


def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="cdeq-bench-ingest-"))
    try:
        return measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the model and Qdrant folder it made


def measure(args: argparse.Namespace, work: Path) -> int:
    texts = corpus_texts(args.corpus, args.n_docs, args.seed)
    model_dir = (
        Path(args.model)
        if args.model
        else make_checkpoint(work / "model", size=args.size, corpus=texts)
    )
    settings = Settings(
        model={"name": str(model_dir), "device": "cpu"},
        redis={"url": args.redis_url},
        qdrant={"path": str(work / "qdrant")},
        ingest={"batch_size": args.batch_size},
    )
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)]

    svc = Cdeq(settings)
    embedder = svc.embedder
    log(
        f"model {model_dir} (dim {embedder.dim}, context {embedder.context_size}); {len(docs)} documents"
    )
    t0 = time.perf_counter()
    create_collection("bench", context_texts=texts[: max(64, embedder.context_size)], service=svc)
    stage1_s = time.perf_counter() - t0
    context = svc.contexts.current("bench").dataset_embeddings

    log("embedder alone: all documents in one call")
    t0 = time.perf_counter()
    result = embedder.embed_documents(texts, context)
    alone_s = time.perf_counter() - t0
    tokens = sum(result.token_counts)
    log("embedder alone: in the worker's batches")
    t0 = time.perf_counter()
    for batch in split([Document(d["id"], d["text"]) for d in docs], args.batch_size):
        embedder.embed_documents([d.text for d in batch], context)
    batched_s = time.perf_counter() - t0
    svc.close()  # the worker process owns the local Qdrant folder from here on

    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CDEQ_REDIS__URL": args.redis_url,
        "CDEQ_QDRANT__PATH": str(work / "qdrant"),
        "CDEQ_MODEL__NAME": str(model_dir),
        "CDEQ_MODEL__DEVICE": "cpu",
        "CDEQ_INGEST__BATCH_SIZE": str(args.batch_size),
    }
    worker = subprocess.Popen(
        # prefork with one child: the pool the CLI accepts (the only one that enforces the
        # hard time limit), one process embedding as --pool solo would
        [
            *(sys.executable, "-m", "app.cli", "worker"),
            *("--pool", "prefork", "--concurrency", "1", "--loglevel", "WARNING"),
        ],
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    producer = Cdeq(settings)
    try:
        deadline = time.monotonic() + 120
        while (
            subprocess.run(
                [sys.executable, "-m", "app.cli", "worker-health", "--timeout", "2"],
                env=env,
                cwd=ROOT,
                capture_output=True,
            ).returncode
            != 0
        ):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit("the worker did not start")
            time.sleep(1)
        log("pipeline: enqueue → worker → Qdrant")
        t0 = time.perf_counter()
        job_id = enqueue("bench", docs, service=producer)
        while not (status := job_status(job_id, service=producer)).finished:
            time.sleep(0.05)
        pipeline_s = time.perf_counter() - t0
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
        producer.close()
    if status.state != "done":
        raise SystemExit(f"job ended {status.state}: {status.errors}")
    check = Cdeq(settings)
    stored = check.store.count_documents("bench")
    points = check.store.count("bench")  # chunks: more than documents when texts are long
    versions = check.store.next_context_version("bench") - 1
    check.close()

    n = len(docs)
    print(
        f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); model dim {embedder.dim}, "
        f"{n} documents, {tokens / n:.0f} text tokens/doc, worker batches of {args.batch_size}\n"
    )
    print("| path | seconds | docs/s | vs embedder alone (one call) |")
    print("|---|---:|---:|---:|")
    for name, seconds in (
        ("embedder alone, one call", alone_s),
        ("embedder alone, worker-sized batches", batched_s),
        ("pipeline: Redis → worker → Qdrant", pipeline_s),
    ):
        print(f"| {name} | {seconds:.2f} | {n / seconds:.1f} | {alone_s / seconds:.0%} |")
    print(
        f"\nstage 1 (context of {embedder.context_size}) once: {stage1_s:.2f} s; context versions: {versions}; "
        f"documents stored: {stored}/{n} ({points} points)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
