"""The `cdeq` command line: a thin layer that parses, calls a use case and maps errors."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.errors import (
    CdeqError,
    ContextNotReady,
    InvalidInput,
    ModelLoadError,
    NotFound,
    StoreUnavailable,
)
from app.logs import configure_logging

EXIT_CODES: dict[type[CdeqError], int] = {
    InvalidInput: 2,
    NotFound: 3,
    ModelLoadError: 4,
    StoreUnavailable: 5,
    ContextNotReady: 5,
}


def _settings(args: argparse.Namespace) -> Any:
    from app.config import load_settings

    settings = load_settings()
    if getattr(args, "model", None):
        settings.model.name = args.model
    if getattr(args, "device", None):
        settings.model.device = args.device
    return settings


def _service(args: argparse.Namespace) -> Any:
    from app.service import Cdeq

    return Cdeq(_settings(args))


# ---- commands ------------------------------------------------------------------------------
def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    from app.model.tiny import make_checkpoint

    corpus = None
    if args.vocab_corpus:
        corpus = [
            line
            for line in Path(args.vocab_corpus).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    out = make_checkpoint(
        args.dir, size=args.size, seed=args.seed, corpus=corpus, family=args.family
    )
    print(f"wrote a random {args.size} cde-small-{args.family} checkpoint to {out}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.store import QdrantStore
    from migrations import LATEST_SCHEMA, migrate

    store = QdrantStore.from_settings(_settings(args).qdrant)
    try:
        applied = migrate(store, target=args.target, log=print)
        version = store.schema_version()
    finally:
        store.close()
    if applied:
        print(f"applied migrations {', '.join(map(str, applied))}; schema version {version}")
    else:
        print(f"nothing to do; schema version {version} (latest {LATEST_SCHEMA})")
    return 0


def read_jsonl(path: str) -> list[Any]:
    """Documents from a JSON-lines file ('-' = stdin); every bad line is reported."""
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    docs: list[Any] = []
    problems: list[str] = []
    with stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                docs.append(json.loads(line))
            except json.JSONDecodeError as exc:
                problems.append(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
    if problems:
        raise InvalidInput(problems, field="file")
    return docs


def _progress(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="doc", file=sys.stderr, disable=None)


def _print_job(status: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(status.to_dict(), indent=2))
        return
    print(
        f"job {status.id} [{status.state}] {status.collection}: {status.succeeded}/{status.total} stored, "
        f"{status.failed} failed, {status.truncated} truncated"
    )
    for doc_id, reason in list(status.errors.items())[:20]:
        print(f"  error   {doc_id}: {reason}")
    for doc_id, reason in list(status.warnings.items())[:20]:
        print(f"  warning {doc_id}: {reason}")
    hidden = max(0, len(status.errors) - 20) + max(0, len(status.warnings) - 20)
    if hidden:
        print(f"  … {hidden} more (use --json)")


def cmd_ingest(args: argparse.Namespace) -> int:
    from app.ingest import job_status, submit

    docs = read_jsonl(args.file)
    svc = _service(args)
    try:
        if not svc.queued:  # in-process mode: the whole job runs here
            bar = _progress(len(docs), f"embedding into {args.collection}")
            try:
                job_id = submit(
                    args.collection,
                    docs,
                    service=svc,
                    on_progress=lambda done, _t: bar.update(done - bar.n),
                )
            finally:
                bar.close()
            status = job_status(job_id, service=svc)
            _print_job(status, args.json)
            return 0 if status.state == "done" else 1
        job_id = submit(args.collection, docs, service=svc)
        if not args.wait:
            print(job_id)
            return 0
        print(f"queued job {job_id} ({len(docs)} documents)", file=sys.stderr)
        bar = _progress(len(docs), f"job {job_id[:8]}")
        try:
            while True:
                status = job_status(job_id, service=svc)
                bar.update(status.processed - bar.n)
                if status.finished:
                    break
                time.sleep(args.poll)
        finally:
            bar.close()
        _print_job(status, args.json)
        return 0 if status.state == "done" else 1
    finally:
        svc.close()


def cmd_status(args: argparse.Namespace) -> int:
    from app.ingest import job_status

    svc = _service(args)
    try:
        if not svc.queued:  # in-process records live in the process that ran the job
            raise StoreUnavailable(
                "job records need Redis: set CDEQ_REDIS__URL (in in-process mode `cdeq ingest` "
                "runs the job at once and prints its outcome)",
                retry_after_s=0,
            )
        _print_job(job_status(args.job, service=svc), args.json)
    finally:
        svc.close()
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from app.query import search

    filt = json.loads(args.filter) if args.filter else None
    svc = _service(args)
    try:
        hits = search(args.name, args.text, top_k=args.top_k, filter=filt, service=svc)
    finally:
        svc.close()
    if args.json:
        print(
            json.dumps(
                [{"id": h.document_id, "score": h.score, "payload": h.payload} for h in hits],
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    if not hits:
        print("no results")
    for rank, hit in enumerate(hits, start=1):
        text = str(hit.payload.get("text", "")).replace("\n", " ")
        print(f"{rank:3d}  {hit.score:.4f}  {hit.document_id}  {text[:80]}")
    return 0


def cmd_collections(args: argparse.Namespace) -> int:
    from app.query import list_collections

    svc = _service(args)
    try:
        infos = list_collections(service=svc)
    finally:
        svc.close()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": c.name,
                        "points": c.points,
                        "context_version": c.context_version,
                        "physical": c.physical,
                    }
                    for c in infos
                ],
                indent=2,
            )
        )
        return 0
    if not infos:
        print("no collections")
    for c in infos:
        print(f"{c.name:40s} {c.points:>10d} documents  context v{c.context_version}")
    return 0


def cmd_create_collection(args: argparse.Namespace) -> int:
    from app.query import create_collection

    texts = None
    if args.context:
        texts = [
            line
            for line in Path(args.context).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    svc = _service(args)
    try:
        version = create_collection(args.name, context_texts=texts, service=svc)
    finally:
        svc.close()
    source = f"{len(texts)} context texts" if texts is not None else "the generic context"
    print(f"created {args.name} (context v{version} from {source})")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from app.queue import INGEST_QUEUE
    from workers.celery_app import create_app

    settings = _settings(args)
    app = create_app(settings)
    argv = [
        "worker",
        "--loglevel",
        args.loglevel,
        "-Q",
        INGEST_QUEUE,
        "--concurrency",
        str(args.concurrency),
        "--pool",
        args.pool,
        "-n",
        f"celery@{socket.gethostname()}",
    ]
    if settings.qdrant.url is None and args.concurrency > 1:
        raise InvalidInput(
            "--concurrency > 1 needs a Qdrant server (CDEQ_QDRANT__URL): local mode is single-process"
        )
    app.worker_main(argv)
    return 0


def cmd_worker_health(args: argparse.Namespace) -> int:
    from workers.celery_app import create_app

    app = create_app(_settings(args))
    name = f"celery@{args.hostname or socket.gethostname()}"
    replies = app.control.inspect(destination=[name], timeout=args.timeout).ping() or {}
    if name in replies:
        print(f"{name}: ok")
        return 0
    print(f"{name}: no answer", file=sys.stderr)
    return 1


def cmd_serve(args: argparse.Namespace) -> int:
    from app.api.server import serve

    settings = _settings(args)
    configure_logging(os.environ.get("CDEQ_LOG_LEVEL", "WARNING"), settings.log.format)
    if args.host:
        settings.api.host = args.host
    if args.port:
        settings.api.port = args.port
    if args.open:
        settings.api.allow_open = True
    return serve(settings)


# ---- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdeq",
        description="Contextual document embeddings (cde-small-v1) with Qdrant. Configuration: "
        "CDEQ_* environment variables (see the README).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def model_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model",
            metavar="DIR_OR_HUB_ID",
            help="checkpoint (default: CDEQ_MODEL__NAME or jxm/cde-small-v1)",
        )
        p.add_argument("--device", help="cpu, cuda, cuda:N (default: CUDA when available)")

    p = sub.add_parser(
        "make-tiny-model", help="write a random checkpoint in the official layout (offline)"
    )
    p.add_argument("dir", help="folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--size",
        choices=["tiny", "mid", "full"],
        default="tiny",
        help="tiny: hidden 64, 2 layers (v2: 4), context 16; full: the real architecture "
        "(v1 281M, v2 306M parameters)",
    )
    p.add_argument(
        "--family",
        choices=["v1", "v2"],
        default="v1",
        help="v1: cde-small-v1 (nomic-bert); v2: cde-small-v2 (ModernBERT)",
    )
    p.add_argument(
        "--vocab-corpus",
        metavar="FILE",
        help="train the tokenizer on these lines (realistic token counts)",
    )
    p.set_defaults(func=cmd_make_tiny_model)

    p = sub.add_parser("migrate", help="apply Qdrant migrations (idempotent)")
    p.add_argument("--target", type=int, help="stop at this schema version")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("ingest", help="embed and store documents from a JSON-lines file")
    p.add_argument("file", help='one {"id", "text", "metadata"?} object per line (\'-\' = stdin)')
    p.add_argument("--collection", required=True)
    p.add_argument(
        "--wait", action="store_true", help="with a queue: wait for the job, showing progress"
    )
    p.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print the job outcome as JSON")
    model_opt(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("status", help="show a queued job's state and counts")
    p.add_argument("job")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("search", help="search a collection")
    p.add_argument("name")
    p.add_argument("text")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--filter", help='JSON, e.g. \'{"metadata.lang": "en"}\'')
    p.add_argument("--json", action="store_true")
    model_opt(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "create-collection", help="create an empty collection with an explicit context"
    )
    p.add_argument("name")
    p.add_argument(
        "--context",
        metavar="FILE",
        help="context corpus, one text per line (default: the generic context)",
    )
    model_opt(p)
    p.set_defaults(func=cmd_create_collection)

    p = sub.add_parser("collections", help="list collections with sizes and context versions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_collections)

    p = sub.add_parser("worker", help="start a Celery ingest worker (one per GPU)")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    p.add_argument("--loglevel", default="INFO")
    model_opt(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("worker-health", help="exit 0 when this host's worker answers a ping")
    p.add_argument("--hostname", help="worker host name (default: this host)")
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(func=cmd_worker_health)

    p = sub.add_parser("serve", help="start the HTTP API (OpenAI-compatible /v1/embeddings)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--open",
        action="store_true",
        help="allow serving without API keys on a non-loopback address",
    )
    model_opt(p)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("CDEQ_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CdeqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for kind, code in EXIT_CODES.items():
            if isinstance(exc, kind):
                return code
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
