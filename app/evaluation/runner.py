"""The evaluation use case: ingest a test set into throw-away collections, one per condition
that needs its own vectors, run every judged query in every search mode, and score the runs.

Conditions that differ only by search mode share one collection. Every collection made here
is dropped at the end, after an error or a Ctrl-C too, unless `keep=True`.
"""

from __future__ import annotations

import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

from app.config import IngestSettings
from app.documents import validate_documents
from app.errors import CdeqError, InvalidInput
from app.evaluation.dataset import TITLE_SEPARATOR, Dataset, load_dataset
from app.evaluation.metrics import aggregate
from app.evaluation.report import Condition, ConditionResult, EvalReport
from app.ingest import job_status, submit
from app.lifecycle import drop_collection
from app.names import check_collection_name
from app.query import MAX_TOP_K, SEARCH_MODES, create_collection, search
from app.service import Cdeq

log = logging.getLogger(__name__)

# (stage, done, total): e.g. ("ingest corpus", 64, 360) or ("queries corpus/dense", 3, 40)
EvalProgress = Callable[[str, int, int], None]

CONTEXT_KINDS = ("corpus", "generic")  # anything else given as a context is a file of texts
DEFAULT_TOP_K = 100  # deep enough for Recall@100
POLL_S = 0.5


# ---- what this build offers ---------------------------------------------------------------------
def search_modes() -> tuple[str, ...]:
    """The search modes `app.query.search` knows."""
    return SEARCH_MODES


def chunking_options() -> tuple[str, ...]:
    """The values of `CDEQ_INGEST__CHUNKING`."""
    return tuple(get_args(IngestSettings.model_fields["chunking"].annotation))


# ---- checking the request -------------------------------------------------------------------------
def _check_choices(values: Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    if isinstance(values, str) or not values:
        raise InvalidInput(f"{what}: give at least one of {', '.join(allowed)}", field=what)
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise InvalidInput(
            f"{what}: unknown {', '.join(map(repr, unknown))}; this build knows "
            f"{', '.join(allowed)}",
            field=what,
        )
    return list(dict.fromkeys(values))


def _context_texts(spec: str) -> list[str]:
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InvalidInput(
            f"contexts: {spec!r} is neither corpus, generic nor a readable file of context "
            "texts (one per line)",
            field="contexts",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"contexts: cannot read {spec!r}: {exc}", field="contexts") from None
    texts = [line.strip() for line in text.splitlines() if line.strip()]
    if len(set(texts)) < 2:
        raise InvalidInput(
            f"contexts: {spec}: {len(set(texts))} distinct texts; a context needs varied texts",
            field="contexts",
        )
    return texts


def _context_label(spec: str) -> str:
    return spec if spec in CONTEXT_KINDS else f"file:{Path(spec).name}"


# ---- services per condition ------------------------------------------------------------------------
def _derived(
    base: Cdeq, *, seed: int, chunking: str | None, min_context_documents: int | None = None
) -> Cdeq:
    """A service for one condition: the base's model, store, job records and queue, with its
    own ingest settings (chunking, context seed) and no automatic context rebuild (a rebuild
    would replace the context being measured)."""
    ingest: dict[str, Any] = {"context_seed": seed}
    if chunking is not None:
        ingest["chunking"] = chunking
    if min_context_documents is not None:
        ingest["min_context_documents"] = min_context_documents
    settings = base.settings.model_copy(
        update={
            "ingest": base.settings.ingest.model_copy(update=ingest),
            "context": base.settings.context.model_copy(update={"auto_rebuild": False}),
        }
    )
    parts: dict[str, Any] = {"embedder": base.embedder, "store": base.store, "jobs": base.jobs}
    if base.queued:
        parts["redis_client"] = base.redis
        parts["dispatcher"] = base.dispatcher
    return Cdeq(settings, **parts)


def _check_corpus(svc: Cdeq, data: Dataset, documents: list[dict[str, Any]]) -> None:
    """Every document checked as `submit` will, each problem named by corpus.jsonl's line."""
    limits = svc.settings.ingest
    lines = [data.corpus_lines[d["id"]] for d in documents]
    problems: list[str] = []
    for start in range(0, len(documents), limits.max_documents_per_job):
        try:
            validate_documents(
                "eval-check",
                documents[start : start + limits.max_documents_per_job],
                max_documents=limits.max_documents_per_job,
                max_text_chars=limits.max_text_chars,
                max_metadata_bytes=limits.max_metadata_bytes,
                lines=lines[start : start + limits.max_documents_per_job],
            )
        except InvalidInput as exc:
            problems.extend(exc.problems)
    if problems:
        prefix = f"{data.corpus_file}:"
        raise InvalidInput(
            [
                re.sub(r"^line (\d+): documents\[\d+\]", prefix + r"\1: document", p)
                for p in problems
            ],
            field="dataset",
        )


def _ingest(
    svc: Cdeq,
    collection: str,
    documents: list[dict[str, Any]],
    stage: str,
    on_progress: EvalProgress | None,
    jobs: list[str],
) -> tuple[int, int]:
    """Every document into `collection` (several jobs when the corpus exceeds the per-job
    limit; the first one builds a corpus context); returns (stored, failed)."""
    per_job = svc.settings.ingest.max_documents_per_job
    total = len(documents)
    stored = failed = 0
    report = on_progress or (lambda _s, _d, _t: None)
    report(stage, 0, total)
    for start in range(0, total, per_job):
        part = documents[start : start + per_job]
        before = stored + failed

        def step(done: int, _total: int, before: int = before) -> None:
            report(stage, before + done, total)

        job_id = submit(collection, part, service=svc, on_progress=step)
        jobs.append(job_id)
        while True:  # in-process mode: already finished; queued: the workers run it
            status = job_status(job_id, service=svc)
            report(stage, before + status.processed, total)
            if status.finished:
                break
            time.sleep(POLL_S)
        stored += status.succeeded
        failed += status.failed
        if status.failed:
            log.warning(
                "%s: %d documents not stored, e.g. %s",
                collection,
                status.failed,
                next(iter(status.errors.items()), ("", status.reason)),
            )
    return stored, failed


def _run_queries(
    svc: Cdeq,
    collection: str,
    queries: dict[str, str],
    mode: str,
    top_k: int,
    stage: str,
    on_progress: EvalProgress | None,
) -> dict[str, list[tuple[str, float]]]:
    # Today's search has no `mode` parameter: pass it only for the modes other branches add.
    extra: dict[str, Any] = {} if mode == "dense" else {"mode": mode}
    run: dict[str, list[tuple[str, float]]] = {}
    for done, (qid, text) in enumerate(queries.items(), start=1):
        hits = search(collection, text, top_k=top_k, service=svc, **extra)
        ranked: list[tuple[str, float]] = []
        seen: set[str] = set()
        for hit in hits:
            if hit.document_id not in seen:  # a document once, at its best rank
                seen.add(hit.document_id)
                ranked.append((hit.document_id, float(hit.score)))
        run[qid] = ranked
        if on_progress is not None:
            on_progress(stage, done, len(queries))
    return run


def _pick_queries(data: Dataset, max_queries: int | None, seed: int) -> dict[str, str]:
    ids = list(data.queries)
    if max_queries is not None and max_queries < len(ids):
        chosen = set(random.Random(seed).sample(ids, max_queries))
        ids = [q for q in ids if q in chosen]  # file order
    return {q: data.queries[q] for q in ids}


# ---- the use case --------------------------------------------------------------------------------
def evaluate(
    dataset_dir: str | Path,
    *,
    service: Cdeq,
    contexts: Sequence[str] = ("corpus",),
    modes: Sequence[str] = ("dense",),
    chunking: Sequence[str] | None = None,
    collection: str | None = None,
    split: str = "test",
    max_queries: int | None = None,
    seed: int = 0,
    top_k: int = DEFAULT_TOP_K,
    keep: bool = False,
    on_progress: EvalProgress | None = None,
) -> EvalReport:
    """Retrieval figures of every condition (context × chunking × mode) on a BEIR-layout set.

    `contexts`: "corpus" (the first ingest's own sample), "generic" (the built-in generic
    texts, or the model folder's random_strings.txt) or a path to a file of context texts.
    `collection`: evaluate that existing collection instead (no ingest; modes only).
    Throw-away collections are dropped at the end, also on errors and KeyboardInterrupt,
    unless `keep`."""
    started = time.monotonic()
    modes = _check_choices(modes, search_modes(), "modes")
    if chunking is not None:
        chunking = _check_choices(chunking, chunking_options(), "chunking")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidInput(f"top_k: must be 1 to {MAX_TOP_K}, got {top_k!r}", field="top_k")
    if max_queries is not None and (
        isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < 1
    ):
        raise InvalidInput(
            f"max_queries: must be a positive integer, got {max_queries!r}", field="max_queries"
        )
    if collection is not None:
        if chunking is not None or list(contexts) != ["corpus"]:
            raise InvalidInput(
                "collection: an existing collection has its own context and chunking: give "
                "only the modes with it (no contexts, no chunking)",
                field="collection",
            )
        check_collection_name(collection)
        context_specs: list[str] = []
    else:
        if isinstance(contexts, str) or not contexts:
            raise InvalidInput(
                "contexts: give at least one of corpus, generic, FILE", field="contexts"
            )
        context_specs = list(dict.fromkeys(contexts))
    explicit = {s: _context_texts(s) for s in context_specs if s not in CONTEXT_KINDS}

    data = load_dataset(dataset_dir, split=split, corpus=collection is None)
    queries = _pick_queries(data, max_queries, seed)
    qrels = {q: data.qrels[q] for q in queries}
    documents = [{"id": i, "text": t} for i, t in data.corpus.items()]
    if collection is None:
        _check_corpus(service, data, documents)

    token = uuid.uuid4().hex[:8]
    created: list[str] = []
    jobs: list[str] = []
    results: list[ConditionResult] = []
    try:
        if collection is not None:
            setups: list[tuple[str, str | None, str, Cdeq]] = [
                (f"existing:{collection}", None, collection, service)
            ]
        else:
            setups = []
        for spec in context_specs:
            for chunk in chunking if chunking is not None else [None]:
                setups.append((spec, chunk, "", service))
        for index, (spec, chunk, name, svc) in enumerate(setups):
            ingest_s, stored, failed = 0.0, 0, 0
            if not name:  # a throw-away collection of our own
                name = f"eval-{token}-{index}"
                while service.store.collection_exists(name):  # never touch a user's collection
                    name = f"eval-{uuid.uuid4().hex[:8]}-{index}"
                svc, stored, failed, ingest_s = _build_condition(
                    service,
                    spec,
                    chunk,
                    name,
                    created,
                    explicit,
                    documents,
                    seed,
                    on_progress,
                    jobs,
                )
            label = spec if spec.startswith("existing:") else _context_label(spec)
            for mode in modes:
                condition = Condition(context=label, mode=mode, chunking=chunk)
                begun = time.monotonic()
                run = _run_queries(
                    svc, name, queries, mode, top_k, f"queries {condition.name}", on_progress
                )
                results.append(
                    ConditionResult(
                        condition=condition,
                        collection=name,
                        metrics=aggregate(qrels, {q: dict(h) for q, h in run.items()}),
                        judged_queries=len(qrels),
                        documents_stored=stored,
                        documents_failed=failed,
                        ingest_s=ingest_s,
                        search_s=time.monotonic() - begun,
                        run=run,
                    )
                )
    finally:
        if not keep:
            _drop_all(service, created)
            _warn_unfinished(service, jobs)
    return EvalReport(
        dataset=str(data.path),
        split=split,
        documents=len(data.corpus) if collection is None else len(data.corpus_lines),
        queries_in_file=data.queries_in_file,
        queries_judged=len(data.queries),
        unjudged_skipped=data.unjudged_skipped,
        queries_evaluated=len(queries),
        results=results,
        settings=_settings_used(
            service,
            contexts=context_specs,
            modes=modes,
            chunking=chunking,
            collection=collection,
            max_queries=max_queries,
            seed=seed,
            top_k=top_k,
        ),
        model=_model_identity(service),
        kept_collections=list(created) if keep else [],
        wall_s=time.monotonic() - started,
    )


def _build_condition(
    service: Cdeq,
    spec: str,
    chunk: str | None,
    name: str,
    created: list[str],
    explicit: dict[str, list[str]],
    documents: list[dict[str, Any]],
    seed: int,
    on_progress: EvalProgress | None,
    jobs: list[str],
) -> tuple[Cdeq, int, int, float]:
    """Create collection `name` with the context `spec` asks for and ingest the corpus."""
    begun = time.monotonic()
    created.append(name)  # before anything exists: a failure half-way is cleaned up too
    if spec == "corpus":
        svc = _derived(service, seed=seed, chunking=chunk)
    else:
        texts = explicit.get(spec) or service.contexts.generic_texts(service.embedder)
        # The generic texts of a tiny test model are fewer than the corpus minimum; as an
        # explicit context they are taken whole (it never falls back, nor is auto-rebuilt).
        floor = min(service.settings.ingest.min_context_documents, len(set(texts)))
        svc = _derived(service, seed=seed, chunking=chunk, min_context_documents=floor)
        create_collection(name, context_texts=texts, service=svc)
    stage = f"ingest {_context_label(spec)}" + (f"/chunking-{chunk}" if chunk else "")
    stored, failed = _ingest(svc, name, documents, stage, on_progress, jobs)
    return svc, stored, failed, time.monotonic() - begun


def _drop_all(service: Cdeq, names: list[str]) -> None:
    for name in names:
        try:
            drop_collection(name, service=service)
        except (CdeqError, OSError) as exc:  # report, and go on with the others
            log.warning("could not drop throw-away collection %r: %s", name, exc)


def _warn_unfinished(service: Cdeq, jobs: list[str]) -> None:
    """After an interruption in queued mode, batches already queued still run on the workers
    and would build the dropped collection again: say which, so the user can drop them."""
    if not service.queued:
        return
    for job_id in jobs:
        try:
            status = job_status(job_id, service=service)
        except CdeqError:
            continue
        if not status.finished:
            log.warning(
                "job %s of throw-away collection %r is still queued: its batches may create the "
                "collection again; drop it when the job is done (cdeq drop-collection %s --yes)",
                job_id,
                status.collection,
                status.collection,
            )


def _settings_used(service: Cdeq, **chosen: Any) -> dict[str, Any]:
    s = service.settings
    return {
        **chosen,
        "title_separator": TITLE_SEPARATOR,
        "queued": service.queued,
        "qdrant": "server" if s.qdrant.url else "local",
        "batch_size": s.ingest.batch_size,
        "context_sample_size": s.ingest.context_sample_size,
        "min_context_documents": s.ingest.min_context_documents,
        "max_text_chars": s.ingest.max_text_chars,
        "chunking_setting": getattr(s.ingest, "chunking", None),
        "search_modes_available": list(search_modes()),
        "library": _library_version(),
    }


def _library_version() -> str:
    import ir_measures

    return f"ir-measures {ir_measures.__version__}"


def _model_identity(service: Cdeq) -> dict[str, Any]:
    embedder = service.embedder
    return {
        "name": service.settings.model.name,
        "model_id": embedder.model_id,
        "fingerprint": embedder.fingerprint,
        "device": str(getattr(embedder, "device", service.settings.model.device)),
        "dtype": str(getattr(embedder, "dtype", service.settings.model.dtype)),
        "context_size": embedder.context_size,
    }
