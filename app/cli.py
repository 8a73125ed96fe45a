"""The `cdeq` command line: a thin layer that parses, calls a use case and maps errors.

Every mistake ends in one clear message on stderr and a documented exit code (`EXIT_CODES`,
the README's table); an unexpected exception prints one line and suggests `--debug`, which
shows the traceback. Input files are read as a stream, line by line, never whole.
"""

from __future__ import annotations

import argparse
import codecs
import json
import logging
import os
import re
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from app.errors import (
    CdeqError,
    Conflict,
    ContextNotReady,
    InvalidInput,
    ModelLoadError,
    NotFound,
    ResourceBusy,
    StoreUnavailable,
)
from app.logs import configure_logging

EXIT_UNEXPECTED = 1  # also: `cdeq ingest` when some documents were not stored
EXIT_CODES: dict[type[CdeqError], int] = {
    InvalidInput: 2,  # bad input, arguments, files or settings (argparse's usage errors too)
    NotFound: 3,
    ModelLoadError: 4,
    StoreUnavailable: 5,
    ContextNotReady: 5,
    Conflict: 6,  # a rebuild already runs; or ModelMismatch: another model embedded it
    ResourceBusy: 5,  # a local Qdrant folder or the port held by another process
}
EXIT_INTERRUPTED = 130
MAX_PROBLEMS_SHOWN = 100


def exit_code(exc: CdeqError) -> int:
    for kind, code in EXIT_CODES.items():
        if isinstance(exc, kind):
            return code
    return EXIT_UNEXPECTED


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
        corpus = read_text_lines(args.vocab_corpus, "--vocab-corpus")
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


# ---- reading input files ----------------------------------------------------------------------
def _open_input(path: str, what: str) -> IO[bytes]:
    """``path`` opened for binary reading ('-' = stdin); a clear InvalidInput when it cannot be."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InvalidInput(
            f"{what}: cannot read {path!r}: {exc.strerror or exc}", field=what
        ) from None


def _lines(
    stream: IO[bytes], max_line_bytes: int, problems: list[str]
) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line, read one at a time (constant memory).

    A UTF-8 byte-order mark is dropped; a line that is not UTF-8, or longer than
    ``max_line_bytes``, is reported in ``problems`` and skipped."""
    number = 0
    while True:
        raw = stream.readline(max_line_bytes + 1)
        if not raw:
            return
        number += 1
        if len(raw) > max_line_bytes:
            while raw and not raw.endswith(b"\n"):  # skip the rest without holding it
                raw = stream.readline(1 << 16)
            problems.append(f"line {number}: longer than the limit of {max_line_bytes} bytes")
            continue
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"line {number}: not valid UTF-8 (bad byte at column {exc.start + 1})")
            continue
        if text.strip():
            yield number, text


@dataclass
class DocumentsFile:
    """Parsed documents of a JSON-lines file, the line each came from, and every bad line."""

    documents: list[Any] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_documents(path: str, *, max_documents: int, max_line_bytes: int) -> DocumentsFile:
    """Documents from a JSON-lines file ('-' = stdin), streamed: only parsed documents are kept.

    Every bad line is collected in ``problems``; more than ``max_documents`` documents stop the
    reading at once."""
    from app.documents import parse_json

    out = DocumentsFile()
    with _open_input(path, "file") as stream:
        for number, text in _lines(stream, max_line_bytes, out.problems):
            try:
                value = parse_json(text)
            except ValueError as exc:
                out.problems.append(f"line {number}: not valid JSON: {exc}")
                continue
            if len(out.documents) >= max_documents:
                raise InvalidInput(
                    f"file: more than {max_documents} documents, the limit per job "
                    "(CDEQ_INGEST__MAX_DOCUMENTS_PER_JOB): split the file",
                    field="file",
                )
            out.documents.append(value)
            out.lines.append(number)
    return out


def read_jsonl(
    path: str, *, max_documents: int = 10**9, max_line_bytes: int = 1 << 26
) -> list[Any]:
    """JSON values of a JSON-lines file ('-' = stdin); one InvalidInput lists every bad line."""
    read = read_documents(path, max_documents=max_documents, max_line_bytes=max_line_bytes)
    if read.problems:
        raise InvalidInput(read.problems, field="file")
    return read.documents


def read_text_lines(path: str, what: str) -> list[str]:
    """The non-blank lines of a UTF-8 text file (BOM accepted), without their line ends."""
    problems: list[str] = []
    with _open_input(path, what) as stream:
        texts = [text.rstrip("\r\n") for _, text in _lines(stream, 1 << 24, problems)]
    if problems:
        raise InvalidInput([f"{what} {path}: {p}" for p in problems], field=what)
    return texts


_LINE = re.compile(r"line (\d+):")


def _by_line(problem: str) -> int:
    found = _LINE.match(problem)
    return int(found.group(1)) if found else 0


def load_documents_file(path: str, collection: str, settings: Any) -> list[Any]:
    """The documents of ``path``, checked as `submit` will check them, so that one error lists
    every bad line (JSON or document) by its line number before anything is queued."""
    from app.documents import validate_documents

    ingest = settings.ingest
    # A line holds one document: its text (6 bytes per character at worst, as \uXXXX escapes),
    # its metadata and its id. Longer lines are refused without being held in memory.
    max_line_bytes = 6 * ingest.max_text_chars + 2 * ingest.max_metadata_bytes + 4096
    read = read_documents(
        path, max_documents=ingest.max_documents_per_job, max_line_bytes=max_line_bytes
    )
    problems = list(read.problems)
    try:
        validate_documents(
            collection,
            read.documents,
            max_documents=ingest.max_documents_per_job,
            max_text_chars=ingest.max_text_chars,
            max_metadata_bytes=ingest.max_metadata_bytes,
            lines=read.lines,
        )
    except InvalidInput as exc:
        skip_empty = bool(problems)  # "no documents" only matters when no line was refused
        problems.extend(
            p for p in exc.problems if not (skip_empty and p.startswith("documents: empty"))
        )
    if problems:
        problems.sort(key=_by_line)
        raise InvalidInput(problems, field="file")
    return read.documents


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
    from app.service import Cdeq

    settings = _settings(args)
    docs = load_documents_file(args.file, args.collection, settings)
    svc = Cdeq(settings)
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
    from app.documents import parse_json
    from app.query import search

    filt = None
    if args.filter:
        try:
            filt = parse_json(args.filter)
        except ValueError as exc:
            raise InvalidInput(f"--filter: not valid JSON: {exc}", field="filter") from None
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
        texts = read_text_lines(args.context, "--context")
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
    _check_worker_pool(args.pool)
    _check_local_folder_free(settings)
    app.worker_main(argv)
    return 0


def _check_worker_pool(pool: str) -> None:
    """Only the prefork pool enforces the hard time limit (its parent kills a stuck task)."""
    if pool != "prefork":
        raise InvalidInput(
            f"--pool {pool}: this pool enforces no task time limits, so a stuck batch would hold "
            "its worker forever; use --pool prefork (with --concurrency 1 for one process)",
            field="pool",
        )


def _check_local_folder_free(settings: Any) -> None:
    """Refuse to start a worker whose local Qdrant folder another process owns: every batch
    would fail to open it."""
    if settings.qdrant.url:
        return
    from app.store import open_client

    open_client(settings.qdrant).close()  # StoreUnavailable (exit 5) names the folder


def cmd_reconcile(args: argparse.Namespace) -> int:
    from app.reconcile import reconcile

    svc = _service(args)
    try:
        if not svc.queued:
            raise StoreUnavailable(
                "reconcile works on queued jobs: set CDEQ_REDIS__URL", retry_after_s=0
            )
        report = reconcile(service=svc, force=True)
    finally:
        svc.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"{report.expired_leases} expired leases, {len(report.requeued)} batches re-queued, "
            f"{len(report.failed_jobs)} jobs failed past their deadline"
        )
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


def cmd_config(args: argparse.Namespace) -> int:
    from app.config import effective_settings

    values = effective_settings(_settings(args))
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

    settings = _settings(args)
    configure_logging(os.environ.get("CDEQ_LOG_LEVEL", "WARNING"), settings.log.format)
    if args.host:
        settings.api.host = args.host
    if args.port:
        settings.api.port = args.port
    if args.open:
        settings.api.allow_open = True
    return serve(settings)


# ---- context lifecycle and collection verbs ---------------------------------------------------
def _print_context(info: Any) -> None:
    built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.built_at))
    print(f"{info.collection}: context v{info.version} ({info.source}, {info.trigger or '-'})")
    print(f"  model          {info.model_id} (fingerprint {info.fingerprint[:12] or '-'})")
    print(f"  built at       {built}")
    print(
        f"  sample         {info.sample_size} texts, {info.distinct_documents} distinct documents"
    )
    print(f"  points         {info.points_at_build} at build, {info.points_now} now")
    print(f"  growth         {info.growth:.2f}")
    if info.drift is not None:
        print(f"  drift          {info.drift:.4f}")
    kept = ", ".join(f"v{v}" for v in info.previous_versions) or "none"
    print(f"  kept versions  {kept}")
    if info.rebuild:
        r = info.rebuild
        print(f"  rebuilding     v{r['target_version']} ({r['trigger']}), job {r['job_id']}")
    if info.auto_rebuild_due:
        print(f"  auto rebuild   due ({info.auto_rebuild_due})")


def cmd_context_show(args: argparse.Namespace) -> int:
    from app.lifecycle import context_info

    svc = _service(args)
    try:
        info = context_info(
            args.name, drift=args.drift, drift_sample=args.drift_sample, seed=args.seed, service=svc
        )
    finally:
        svc.close()
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
    else:
        _print_context(info)
    return 0


def cmd_context_rebuild(args: argparse.Namespace) -> int:
    from app.ingest import job_status
    from app.lifecycle import rebuild_context

    texts = read_text_lines(args.context, "--context") if args.context else None
    svc = _service(args)
    try:
        bar = _progress(0, f"rebuilding {args.name}") if not svc.queued else None
        try:
            job_id = rebuild_context(
                args.name,
                sample_size=args.sample_size,
                seed=args.seed,
                context_texts=texts,
                service=svc,
                on_progress=(lambda done, total: _bar_to(bar, done, total)) if bar else None,
            )
        finally:
            if bar is not None:
                bar.close()
        if svc.queued and not args.wait:
            print(job_id)
            return 0
        status = job_status(job_id, service=svc)
        if svc.queued:
            print(f"queued rebuild job {job_id}", file=sys.stderr)
            bar = _progress(status.total, f"job {job_id[:8]}")
            try:
                while not status.finished:
                    time.sleep(args.poll)
                    status = job_status(job_id, service=svc)
                    bar.update(status.succeeded - bar.n)
            finally:
                bar.close()
        _print_job(status, args.json)
        return 0 if status.state == "done" else 1
    finally:
        svc.close()


def _bar_to(bar: Any, done: int, total: int) -> None:
    bar.total = total
    bar.update(done - bar.n)


def cmd_context_rollback(args: argparse.Namespace) -> int:
    from app.lifecycle import rollback

    svc = _service(args)
    try:
        version = rollback(args.name, service=svc)
    finally:
        svc.close()
    print(f"{args.name}: context v{version} is live again")
    return 0


def cmd_context_prune(args: argparse.Namespace) -> int:
    from app.lifecycle import prune

    svc = _service(args)
    try:
        removed = prune(args.name, service=svc)
    finally:
        svc.close()
    shown = ", ".join(f"v{v}" for v in removed) or "nothing"
    print(f"{args.name}: removed {shown}")
    return 0


def cmd_drop_collection(args: argparse.Namespace) -> int:
    from app.lifecycle import drop_collection

    if not args.yes:
        raise InvalidInput(
            f"drop-collection deletes {args.name!r} and every version of it: add --yes",
            field="yes",
        )
    svc = _service(args)
    try:
        drop_collection(args.name, service=svc)
    finally:
        svc.close()
    print(f"dropped {args.name}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from app.query import delete_documents

    ids = list(args.ids)
    if args.ids_file:
        ids.extend(read_text_lines(args.ids_file, "--ids-file"))
    if not ids:
        raise InvalidInput("give document ids, or --ids-file FILE (one id per line)", field="ids")
    svc = _service(args)
    try:
        deleted = delete_documents(args.name, ids, service=svc)
    finally:
        svc.close()
    print(f"deleted {deleted} of {len(set(ids))} documents from {args.name}")
    return 0


def add_lifecycle_commands(sub: Any, model_opt: Callable[[argparse.ArgumentParser], None]) -> None:
    """`cdeq context show|rebuild|rollback|prune`, `cdeq drop-collection`, `cdeq delete`."""
    ctx = sub.add_parser("context", help="inspect, rebuild, roll back or prune a context")
    verbs = ctx.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("show", help="the live context: version, source, growth, drift")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.add_argument("--drift", action="store_true", help="compute drift (one stage-1 pass)")
    p.add_argument("--drift-sample", type=int, help="stored texts sampled for drift (64)")
    p.add_argument("--seed", type=int, help="sampling seed (CDEQ_INGEST__CONTEXT_SEED)")
    model_opt(p)
    p.set_defaults(func=cmd_context_show)

    p = verbs.add_parser("rebuild", help="rebuild the context from the whole collection")
    p.add_argument("name")
    p.add_argument("--context", metavar="FILE", help="context texts, one per line")
    p.add_argument("--sample-size", type=int, help="stored texts sampled for stage 1 (512)")
    p.add_argument("--seed", type=int, help="sampling seed (CDEQ_INGEST__CONTEXT_SEED)")
    p.add_argument("--wait", action="store_true", help="with a queue: wait until swapped")
    p.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print the job outcome as JSON")
    model_opt(p)
    p.set_defaults(func=cmd_context_rebuild)

    p = verbs.add_parser("rollback", help="make the previous kept version live again")
    p.add_argument("name")
    model_opt(p)
    p.set_defaults(func=cmd_context_rollback)

    p = verbs.add_parser("prune", help="delete every version but the live one")
    p.add_argument("name")
    p.set_defaults(func=cmd_context_prune)
    for verb in verbs.choices.values():  # `cdeq context show NAME --debug` too
        verb.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
        )

    p = sub.add_parser("drop-collection", help="delete a collection and all its versions")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="confirm")
    p.set_defaults(func=cmd_drop_collection)

    p = sub.add_parser("delete", help="delete documents by id")
    p.add_argument("name")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--ids-file", metavar="FILE", help="one document id per line")
    p.set_defaults(func=cmd_delete)


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

    p = sub.add_parser(
        "reconcile",
        help="re-queue batches of dead workers and jobs never fully queued (workers do this "
        "every CDEQ_INGEST__RECONCILE_INTERVAL_S)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("worker-health", help="exit 0 when this host's worker answers a ping")
    p.add_argument("--hostname", help="worker host name (default: this host)")
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(func=cmd_worker_health)

    p = sub.add_parser(
        "config", help="print the effective settings (environment, .env, defaults); secrets masked"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_config)

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

    add_lifecycle_commands(sub, model_opt)

    # --debug is accepted before or after the command name, by every command.
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    for command in sub.choices.values():
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
        )
    return parser


DEBUG_HELP = "show the traceback of an unexpected error"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _report(exc: CdeqError) -> None:
    problems = exc.problems if isinstance(exc, InvalidInput) else []
    if len(problems) <= 1:
        print(f"error: {exc}", file=sys.stderr)
        return
    print(f"error: {len(problems)} problems:", file=sys.stderr)
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        print(f"  {problem}", file=sys.stderr)
    if len(problems) > MAX_PROBLEMS_SHOWN:
        print(f"  … and {len(problems) - MAX_PROBLEMS_SHOWN} more", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    # Messages may quote any text a user sent (ids, file names): never fail on printing them.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    level = os.environ.get("CDEQ_LOG_LEVEL", "WARNING").upper()
    if level not in LOG_LEVELS:
        print(
            f"error: CDEQ_LOG_LEVEL: unknown level {level!r} (use one of {', '.join(LOG_LEVELS)})",
            file=sys.stderr,
        )
        return EXIT_CODES[InvalidInput]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CdeqError as exc:
        if debug:
            traceback.print_exc()
        _report(exc)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug or an unforeseen failure: one line, the rest on demand
        if debug:
            raise
        message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print(
            f"error: unexpected {type(exc).__name__}{': ' + message if message else ''} "
            "(run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
