"""The `cdeq` commands for documents, search, collections, the model, settings and the API."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from app.cli.common import print_job, progress_bar, service_from, settings_from
from app.cli.inputs import load_documents_file, read_text_lines
from app.errors import (
    InvalidInput,
    StoreUnavailable,
)
from app.logs import configure_logging


# ---- commands ------------------------------------------------------------------------------
def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    from app.model.tiny import make_checkpoint

    corpus = None
    if args.vocab_corpus:
        corpus = read_text_lines(args.vocab_corpus, "--vocab-corpus")
    out = make_checkpoint(
        args.dir, size=args.size, seed=args.seed, corpus=corpus, family=args.family
    )
    print(f"wrote a random {args.size} cde-small-{args.family} checkpoint to {out}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.store import QdrantStore
    from migrations import LATEST_SCHEMA, migrate

    store = QdrantStore.from_settings(settings_from(args).qdrant)
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


def cmd_ingest(args: argparse.Namespace) -> int:
    from app.ingest import job_status, submit
    from app.service import Cdeq

    settings = settings_from(args)
    docs = load_documents_file(args.file, args.collection, settings)
    svc = Cdeq(settings)
    try:
        if not svc.queued:  # in-process mode: the whole job runs here
            bar = progress_bar(len(docs), f"embedding into {args.collection}")
            stored = [0]

            def progress(done: int, _total: int) -> None:
                stored[0] = done
                bar.update(done - bar.n)

            try:
                job_id = submit(args.collection, docs, service=svc, on_progress=progress)
            except KeyboardInterrupt:
                bar.close()
                print(interrupted_message(stored[0], len(docs)), file=sys.stderr)
                raise
            finally:
                bar.close()
            status = job_status(job_id, service=svc)
            print_job(status, args.json)
            return 0 if status.state == "done" else 1
        job_id = submit(args.collection, docs, service=svc)
        if not args.wait:
            print(job_id)
            return 0
        print(f"queued job {job_id} ({len(docs)} documents)", file=sys.stderr)
        bar = progress_bar(len(docs), f"job {job_id[:8]}")
        try:
            while True:
                status = job_status(job_id, service=svc)
                bar.update(status.processed - bar.n)
                if status.finished:
                    break
                time.sleep(args.poll)
        finally:
            bar.close()
        print_job(status, args.json)
        return 0 if status.state == "done" else 1
    finally:
        svc.close()


def interrupted_message(stored: int, total: int) -> str:
    """What Ctrl-C during an in-process ingest left behind, and that running it again is safe."""
    return (
        f"interrupted: {stored} of {total} documents were stored (the batch in progress may "
        "be partly stored); running the same command again is safe: documents with the same "
        "id are overwritten, never duplicated"
    )


def cmd_status(args: argparse.Namespace) -> int:
    from app.ingest import job_status

    svc = service_from(args)
    try:
        if not svc.queued:  # in-process records live in the process that ran the job
            raise StoreUnavailable(
                "job records need Redis: set CDEQ_REDIS__URL (in in-process mode `cdeq ingest` "
                "runs the job at once and prints its outcome)",
                retry_after_s=0,
            )
        print_job(job_status(args.job, service=svc), args.json)
    finally:
        svc.close()
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from app.documents import parse_json
    from app.query import search

    filt = None
    if args.filter:
        try:
            filt = parse_json(args.filter)
        except ValueError as exc:
            raise InvalidInput(f"--filter: not valid JSON: {exc}", field="filter") from None
    svc = service_from(args)
    try:
        hits = search(
            args.name,
            args.text,
            top_k=args.top_k,
            filter=filt,
            mode=args.mode,
            group=not args.chunks,
            service=svc,
        )
    finally:
        svc.close()
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=2, ensure_ascii=False))
        return 0
    if not hits:
        print("no results")
    for rank, hit in enumerate(hits, start=1):
        text = str(hit.payload.get("text", "")).replace("\n", " ")
        where = f"[{hit.chunk_index + 1}/{hit.chunk_count}]" if hit.chunk_count > 1 else ""
        print(f"{rank:3d}  {hit.score:.4f}  {hit.document_id}{where}  {text[:80]}")
    return 0


def cmd_collections(args: argparse.Namespace) -> int:
    from app.query import list_collections

    svc = service_from(args)
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
                        "documents": c.documents,
                        "points": c.points,
                        "context_version": c.context_version,
                        "physical": c.physical,
                        "sparse": c.sparse,
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
        documents = "?" if c.documents is None else str(c.documents)
        sparse = "sparse" if c.sparse else "dense only"
        print(
            f"{c.name:40s} {documents:>10s} documents {c.points:>10d} points  "
            f"context v{c.context_version}  {sparse}"
        )
    return 0


def cmd_create_collection(args: argparse.Namespace) -> int:
    from app.query import create_collection

    texts = None
    if args.context:
        texts = read_text_lines(args.context, "--context")
    svc = service_from(args)
    try:
        version = create_collection(args.name, context_texts=texts, service=svc)
    finally:
        svc.close()
    source = f"{len(texts)} context texts" if texts is not None else "the generic context"
    print(f"created {args.name} (context v{version} from {source})")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from app.config import effective_settings

    values = effective_settings(settings_from(args))
    if args.json:
        print(json.dumps(values, indent=2))
        return 0
    for name, value in values.items():
        shown = (
            "(unset)" if value is None else value if isinstance(value, str) else json.dumps(value)
        )
        print(f"{name}={shown}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from app.api.server import serve

    settings = settings_from(args)
    configure_logging(os.environ.get("CDEQ_LOG_LEVEL", "WARNING"), settings.log.format)
    if args.host:
        settings.api.host = args.host
    if args.port:
        settings.api.port = args.port
    if args.open:
        settings.api.allow_open = True
    return serve(settings)
