"""Context lifecycle use cases: inspect a collection's context, rebuild it from the whole
collection, swap, roll back, prune, drop; the automatic upgrade policy; and the dual write that
keeps a rebuild's new version complete while documents keep arriving.

A rebuild of NAME (live version v) is a job, recorded like an ingest job:

1. `rebuild_context` (any process, no model needed): a seeded sample of the live collection's
   stored texts becomes the job's context sample; the point ids of the live version, in id
   order, are cut into batches; a **rebuild marker** (meta point) names the job and the target
   version v+1. Batches go to the workers (queued mode) or run here (in-process mode).
2. The first batch to run builds context v+1 (stage 1, once, under the collection's lock) into
   a "building" context and an empty physical collection NAME__c<v+1>.
3. Each batch re-embeds its documents from their stored texts into NAME__c<v+1>.
4. While the marker exists, every ingest batch also writes NAME__c<v+1> (`mirror_documents`),
   and deletes reach every physical collection (the store does that).
5. The batch that completes the set finishes the job (`finish_rebuild`): a catch-up pass
   compares point ids and content hashes of v and v+1 and fixes every difference, the counts
   must match, then context v+1 becomes "ready", the alias swaps atomically, and older
   versions beyond `CDEQ_CONTEXT__KEEP_VERSIONS` are deleted. Only then is the job done.

A batch that dies is delivered again (late acks) and a repeated batch rewrites the same
deterministic point ids, so a rebuild resumes; the live version is never written by it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import redis

from app.errors import (
    CdeqError,
    Conflict,
    ContextNotReady,
    InvalidInput,
    NotFound,
    StoreUnavailable,
)
from app.jobs import JobKind
from app.model import Progress
from app.names import check_collection_name
from app.rebuild import (
    CATCH_UP_PASSES,
    REBUILD_COUNTS_KEY,
    TRIGGERS,
    abandon,
    apply_retention,
    catch_up,
    check_context_texts,
    job_active,
    kept_versions,
    live_physical,
    marker_dict,
    no_rebuild,
    rebuild_seed,
    require_texts,
    sample_documents,
    verify_version,
    version_of,
)
from app.rebuild_batches import RebuildBatch, dispatch, give_up, run_here
from app.service import Cdeq
from app.store import ContextRecord, ContextSource, RebuildMarker

log = logging.getLogger(__name__)


# ---- inspecting --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ContextInfo:
    """What `cdeq context show` prints: the live context and how far the collection moved."""

    collection: str
    version: int
    source: str
    trigger: str
    model_id: str
    fingerprint: str
    built_at: float
    sample_size: int  # texts stage 1 read (the model's context size)
    distinct_documents: int  # distinct documents among them (0 for the generic context)
    sampled_chunks: int  # distinct chunks among them (a document may give several)
    points_at_build: int
    points_now: int
    growth: float  # points_now / max(points_at_build, 1)
    drift: float | None  # 1 - cos(mean fresh stage-1 embedding, mean stored one); on request
    previous_versions: list[int]
    rebuild: dict[str, Any] | None  # the rebuild in progress: job_id, target_version, trigger
    auto_rebuild_due: str | None  # "generic" or "growth" when the policy would rebuild now
    sparse: bool = False  # whether the live version has BM25 vectors (sparse and hybrid search)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def context_info(
    collection: str,
    *,
    drift: bool = False,
    drift_sample: int | None = None,
    seed: int | None = None,
    service: Cdeq,
) -> ContextInfo:
    """The live context of `collection`, its growth, and (with `drift`) its drift: one stage-1
    pass over a fresh seeded sample of stored texts, so only computed on request."""
    check_collection_name(collection)
    if drift_sample is not None and (
        isinstance(drift_sample, bool) or not isinstance(drift_sample, int) or drift_sample < 2
    ):
        raise InvalidInput(
            f"drift_sample: must be an integer >= 2, got {drift_sample!r}", field="drift_sample"
        )
    store = service.store
    live = live_physical(service, collection)
    version = version_of(live)
    record = store.load_context(collection, version)
    if record is None:
        raise ContextNotReady(f"context {version} of {collection!r} is not stored yet")
    points_now = store.count_documents(live)
    growth = points_now / max(record.points_at_build, 1)
    drift_value = None
    if drift:
        # Stage 1 of another model says nothing about this context: refuse, as search does.
        service.contexts.current(collection)
        n = drift_sample or service.settings.context.drift_sample
        drift_value = _drift(service, live, record, n, rebuild_seed(service, seed))
    marker = store.load_rebuild_marker(collection)
    if marker is not None and service.queued and not job_active(service, marker.job_id):
        marker = None  # an orphan (its job ended or is gone): the reconciler clears it
    return ContextInfo(
        collection=collection,
        version=version,
        source=str(record.source),
        trigger=record.trigger,
        model_id=record.model_id,
        fingerprint=record.fingerprint,
        built_at=record.created_at,
        sample_size=int(record.dataset_embeddings.shape[0]),
        distinct_documents=len(set(record.sampled_ids)),
        sampled_chunks=record.sampled_chunks,
        points_at_build=record.points_at_build,
        points_now=points_now,
        growth=growth,
        drift=drift_value,
        previous_versions=kept_versions(service, collection, version),
        rebuild=marker_dict(marker),
        auto_rebuild_due=_auto_reason(service, record, points_now),
        sparse=store.has_sparse(live),
    )


def _drift(svc: Cdeq, live: str, record: ContextRecord, n: int, seed: int) -> float:
    """1 - cosine(mean stage-1 embedding of n fresh stored texts, mean stored dataset embedding)."""
    docs = sample_documents(svc, live, n, seed)
    if not docs:
        raise InvalidInput("drift: the collection has no documents to sample", field="drift")
    texts = [d["text"] for d in docs]
    fresh = svc.embedder.embed_context(texts, seed=seed).mean(axis=0)
    stored = np.asarray(record.dataset_embeddings, dtype=np.float64).mean(axis=0)
    fresh = np.asarray(fresh, dtype=np.float64)
    denom = float(np.linalg.norm(fresh) * np.linalg.norm(stored)) or 1.0
    return float(1.0 - float(fresh @ stored) / denom)


# ---- starting a rebuild --------------------------------------------------------------------------
def rebuild_context(
    collection: str,
    *,
    sample_size: int | None = None,
    seed: int | None = None,
    context_texts: Sequence[str] | None = None,
    service: Cdeq,
    trigger: str = "manual",
    on_progress: Progress | None = None,
    request_id: str | None = None,
) -> str:
    """Rebuild the context of `collection` from its whole current corpus; returns the job id.

    Stage 1 runs once on a seeded sample (`sample_size` texts, default
    CDEQ_INGEST__CONTEXT_SAMPLE_SIZE) of every stored document, or on `context_texts`. Every
    document is re-embedded into the next version, which goes live when complete. With a queue
    the job runs on the workers and this returns at once; in-process it runs here first.
    `request_id` (the API request's) is kept in the job record and tags the workers' lines."""
    check_collection_name(collection)
    if trigger not in TRIGGERS:
        raise InvalidInput(f"trigger: one of {TRIGGERS}, got {trigger!r}", field="trigger")
    if sample_size is not None and (
        isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 2
    ):
        raise InvalidInput(
            f"sample_size: must be an integer >= 2, got {sample_size!r}", field="sample_size"
        )
    texts = check_context_texts(context_texts)
    seed = rebuild_seed(service, seed)
    n = sample_size or service.settings.ingest.context_sample_size
    store = service.store
    with service.locks(collection):
        live = live_physical(service, collection)
        marker = store.load_rebuild_marker(collection)
        if marker is not None:
            if job_active(service, marker.job_id):
                raise Conflict(
                    f"a rebuild of {collection!r} is already running (job {marker.job_id}, "
                    f"version {marker.target_version})"
                )
            abandon(service, marker)  # its job died or expired: start over
        hashes = store.point_hashes(live)
        if texts is None:
            corpus = sample_documents(service, live, n, seed, ids=sorted(hashes))
            if len({d["text"] for d in corpus}) < 2:
                raise InvalidInput(
                    f"collection {collection!r} has {len(hashes)} stored chunks, too few to sample "
                    "a context from; ingest more, or give context texts",
                    field="collection",
                )
        else:
            corpus = [{"id": "", "text": t} for t in texts]
        if hashes:
            require_texts(service, collection, live, sorted(hashes)[:1])
        ids = sorted(hashes)
        size = service.settings.ingest.batch_size
        # At least one (maybe empty) batch: it builds the context. Then one more step, the
        # finish (catch-up, swap), so the job is done only once swapped.
        chunks = [ids[i : i + size] for i in range(0, len(ids), size)] or [[]]
        chunks.append([])
        job_id = uuid.uuid4().hex
        batches = [RebuildBatch(job_id, collection, i, c) for i, c in enumerate(chunks)]
        # Queued, each step's point ids live in the job record (the reconciler can queue any
        # step again) and the messages carry (job id, index) only.
        service.jobs.create(
            job_id,
            collection,
            len(ids),
            len(batches),
            corpus,
            payloads=chunks if service.queued else None,
            request_id=request_id,
            kind=JobKind.REBUILD,
        )
        target = store.next_context_version(collection)
        store.save_rebuild_marker(
            RebuildMarker(
                collection=collection,
                job_id=job_id,
                from_version=version_of(live),
                target_version=target,
                trigger=trigger,
                started_at=time.time(),
                seed=seed,
                source=str(ContextSource.EXPLICIT if texts is not None else ContextSource.REBUILD),
            )
        )
    _count_rebuild(service, trigger)
    log.info(
        "rebuild of %r (%s): job %s, version %d, %d documents in %d batches",
        collection,
        trigger,
        job_id,
        target,
        len(ids),
        len(batches) - 1,
    )
    if service.queued:
        dispatch(service, batches, request_id)
    else:
        run_here(service, batches, len(ids), on_progress)
    return job_id


# ---- the automatic policy ---------------------------------------------------------------------------
def after_ingest_job(svc: Cdeq, collection: str) -> str | None:
    """Called when an ingest job finishes: start a rebuild once when the policy says so
    (generic context and enough documents, or growth over CDEQ_CONTEXT__REBUILD_GROWTH).
    Returns the rebuild's job id, or None. Never raises: the ingest job is done either way."""
    if not svc.settings.context.auto_rebuild:
        return None
    try:
        live = svc.store.resolve(collection)
        if live is None or svc.store.load_rebuild_marker(collection) is not None:
            return None
        record = svc.store.load_context(collection, version_of(live))
        if record is None:
            return None
        reason = _auto_reason(svc, record, svc.store.count_documents(live))
        if reason is None:
            return None
        log.warning(
            "collection %r: automatic context rebuild (%s, %s)",
            collection,
            reason,
            f"{record.source} context of {record.points_at_build} documents",
        )
        return rebuild_context(collection, service=svc, trigger=f"auto-{reason}")
    except (Conflict, ContextNotReady) as exc:  # another process started one first
        log.info("automatic rebuild of %r not started: %s", collection, exc)
    except CdeqError as exc:
        log.warning("automatic rebuild of %r not started: %s", collection, exc)
    return None


def _auto_reason(svc: Cdeq, record: ContextRecord, points_now: int) -> str | None:
    settings = svc.settings
    if not settings.context.auto_rebuild:
        return None
    if record.source == ContextSource.GENERIC:
        if points_now >= settings.ingest.min_context_documents:
            return "generic"
        return None
    growth = points_now / max(record.points_at_build, 1)
    if (
        record.source in (ContextSource.CORPUS, ContextSource.REBUILD)
        and growth > settings.context.rebuild_growth
    ):
        return "growth"
    return None  # an explicit context is the user's choice: never replaced automatically


def rebuild_counts(*, service: Cdeq) -> dict[str, int]:
    """Rebuilds started, by trigger (Redis-wide with a queue; this process's without)."""
    counts = dict.fromkeys(TRIGGERS, 0)
    client = service.redis
    if client is None:
        counts.update(service.contexts.rebuilds_started)
        return counts
    try:
        raw = client.hgetall(REBUILD_COUNTS_KEY)
    except redis.RedisError as exc:
        raise StoreUnavailable(f"Redis is unreachable ({exc})", retry_after_s=2.0) from exc
    for key, value in raw.items():
        counts[key.decode() if isinstance(key, bytes) else str(key)] = int(value)
    return counts


def _count_rebuild(svc: Cdeq, trigger: str) -> None:
    client = svc.redis
    if client is None:
        started = svc.contexts.rebuilds_started
        started[trigger] = started.get(trigger, 0) + 1
        return
    try:
        client.hincrby(REBUILD_COUNTS_KEY, trigger, 1)
    except redis.RedisError as exc:  # a metric must not fail the rebuild
        log.warning("could not count a rebuild: %s", exc)


# ---- rollback, prune, drop -------------------------------------------------------------------------
def rollback(collection: str, *, service: Cdeq) -> int:
    """Make the newest kept version older than the live one live again; returns its version.

    Documents ingested, changed or deleted since the swap are caught up in it first (re-embedded
    with its own context), so nothing is lost by rolling back."""
    check_collection_name(collection)
    store = service.store
    with service.locks(collection):
        no_rebuild(service, collection, "roll back")
        live = live_physical(service, collection)
        version = version_of(live)
        older = [v for v in kept_versions(service, collection, version) if v < version]
        if not older:
            raise NotFound(
                f"collection {collection!r} has no previous context version to roll back to "
                "(none was kept, or it was pruned)"
            )
        previous = service.contexts.at_version(collection, max(older))
        service.contexts.check_model(previous)
        for _ in range(CATCH_UP_PASSES):
            if catch_up(service, collection, live, previous) == 0:
                break
        # As a rebuild's finish: every live document there, written by its model, or no swap.
        verify_version(service, collection, previous, store.count_physical(live), unstamped=False)
        store.set_alias(collection, previous.physical)
        service.contexts.forget(collection)
    log.info("rolled %r back from version %d to %d", collection, version, previous.version)
    return previous.version


def prune(collection: str, *, service: Cdeq) -> list[int]:
    """Delete every version of `collection` but the live one; returns the versions removed."""
    check_collection_name(collection)
    with service.locks(collection):
        no_rebuild(service, collection, "prune")
        live = live_physical(service, collection)
        removed = apply_retention(service, collection, version_of(live), keep=0)
    return removed


def drop_collection(collection: str, *, service: Cdeq, force: bool = False) -> None:
    """Delete `collection`: its alias, every physical collection and every context.

    While a rebuild of it runs: Conflict, unless `force`, which cancels the rebuild first
    (job failed with the reason, its new version removed; its steps still queued find the
    job finished and do nothing)."""
    check_collection_name(collection)
    marker = service.store.load_rebuild_marker(collection)
    if marker is not None and job_active(service, marker.job_id):
        if not force:
            raise Conflict(
                f"a rebuild of {collection!r} is running (job {marker.job_id}): wait for it, "
                "or drop with --force (HTTP: ?force=true), which cancels it"
            )
        give_up(
            service,
            collection,
            marker.job_id,
            "rebuild cancelled: the collection was dropped (drop-collection --force)",
        )
    service.store.drop_collection(collection)
    service.contexts.forget(collection)
