"""Context rebuild throughput against plain ingest throughput on the same documents and model,
in the same run (in-process mode: one process, Qdrant local mode, no Redis).

    .venv/bin/python bench/rebuild.py [--corpus FILE] [--n-docs N] [--model DIR | --size tiny|full]
                                      [--batch-size B] [--sample-size S] [--dry-run]

1. ingest: `ingest_documents` of the N documents into a fresh collection (stage 1 once on the
   job's sample, stage 2 and upserts for every document) — the baseline;
2. rebuild: `rebuild_context` of that collection (stage 1 once on a sample of the stored texts,
   every document re-embedded from its stored text into the next version, catch-up, swap).

Both do one stage-1 pass and N stage-2 embeddings, so the ratio rebuild docs/s ÷ ingest docs/s
shows what the rebuild adds (scrolls, reads of stored texts, the catch-up comparison). The
automatic rebuild policy is off. Prints one markdown table; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from app.config import Settings  # noqa: E402
from app.ingest import ingest_documents  # noqa: E402
from app.lifecycle import context_info, rebuild_context  # noqa: E402
from app.model.tiny import make_checkpoint  # noqa: E402
from app.service import Cdeq  # noqa: E402

DEFAULT_CORPUS = ROOT / "bench" / "data" / "docs.txt"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--n-docs", type=int, default=600)
    parser.add_argument("--model", help="checkpoint folder (default: a random one of --size)")
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sample-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="a check in seconds: the tiny model, 40 documents in batches of 16",
    )
    args = parser.parse_args()
    if args.dry_run:
        args.n_docs, args.batch_size = min(args.n_docs, 40), min(args.batch_size, 16)
        args.size = "tiny" if args.model is None else args.size
    if not args.corpus.is_file():
        parser.error(f"--corpus {args.corpus}: no such file")

    lines = [x for x in args.corpus.read_text(encoding="utf-8").split("\n") if x.strip()]
    rng = random.Random(args.seed)
    texts = [lines[i % len(lines)] for i in range(args.n_docs)]
    rng.shuffle(texts)
    docs = [{"id": f"b{i}", "text": t} for i, t in enumerate(texts)]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(
            make_checkpoint(Path(tmp) / "model", size=args.size, seed=args.seed, corpus=lines)
        )
        settings = Settings(
            model={"name": model, "device": "cpu"},  # type: ignore[arg-type]
            redis={"url": None},  # type: ignore[arg-type]
            qdrant={"path": str(Path(tmp) / "qdrant")},  # type: ignore[arg-type]
            ingest={  # type: ignore[arg-type]
                "batch_size": args.batch_size,
                "context_sample_size": args.sample_size,
            },
            context={"auto_rebuild": False},  # type: ignore[arg-type]
        )
        svc = Cdeq(settings)
        try:
            svc.embedder  # noqa: B018 (load before timing)
            log(f"ingest of {len(docs)} documents")
            started = time.perf_counter()
            status = ingest_documents("bench", docs, service=svc)
            ingest_s = time.perf_counter() - started
            assert status.succeeded == len(docs), status
            log(f"rebuild of {len(docs)} documents")
            started = time.perf_counter()
            rebuild_context("bench", service=svc)
            rebuild_s = time.perf_counter() - started
            info = context_info("bench", service=svc)
            assert info.version == 2 and info.points_now == len(docs), info
        finally:
            svc.close()
    n = len(docs)
    print(
        f"{args.size if not args.model else args.model}, {n} documents, batch {args.batch_size}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor()}"
    )
    print()
    print("| path | seconds | docs/s | vs ingest |")
    print("|---|---:|---:|---:|")
    print(f"| ingest (stage 1 + stage 2 + upserts) | {ingest_s:.1f} | {n / ingest_s:.2f} | 100% |")
    print(
        f"| rebuild (stage 1 + re-embed + catch-up + swap) | {rebuild_s:.1f} | "
        f"{n / rebuild_s:.2f} | {ingest_s / rebuild_s:.0%} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
