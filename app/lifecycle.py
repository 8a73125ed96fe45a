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

import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import redis

from app.contexts import Context
from app.documents import Document
from app.errors import (
    CdeqError,
    Conflict,
    ContextNotReady,
    InvalidInput,
    NotFound,
    StoreUnavailable,
)
from app.jobs import BatchOutcome, JobStatus
from app.jobs.records import CONTEXT_TEXT_CHARS
from app.names import check_collection_name, parse_physical
from app.service import Cdeq
from app.store import ContextRecord, ContextSource, PointRecord, RebuildMarker, StoredDocument

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
TRANSIENT_ERRORS = (StoreUnavailable, ContextNotReady)
REBUILD_COUNTS_KEY = "cdeq:metrics:context_rebuilds"
TRIGGERS = ("manual", "auto-generic", "auto-growth")
_CATCH_UP_PASSES = 5


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
    points_at_build: int
    points_now: int
    growth: float  # points_now / max(points_at_build, 1)
    drift: float | None  # 1 - cos(mean fresh stage-1 embedding, mean stored one); on request
    previous_versions: list[int]
    rebuild: dict[str, Any] | None  # the rebuild in progress: job_id, target_version, trigger
    auto_rebuild_due: str | None  # "generic" or "growth" when the policy would rebuild now

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
    live = _live(service, collection)
    version = _version_of(live)
    record = store.load_context(collection, version)
    if record is None:
        raise ContextNotReady(f"context {version} of {collection!r} is not stored yet")
    points_now = store.count_physical(live)
    growth = points_now / max(record.points_at_build, 1)
    drift_value = None
    if drift:
        n = drift_sample or service.settings.context.drift_sample
        drift_value = _drift(service, live, record, n, _seed(service, seed))
    marker = store.load_rebuild_marker(collection)
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
        points_at_build=record.points_at_build,
        points_now=points_now,
        growth=growth,
        drift=drift_value,
        previous_versions=_kept_versions(service, collection, version),
        rebuild=_marker_dict(marker),
        auto_rebuild_due=_auto_reason(service, record, points_now),
    )


def _drift(svc: Cdeq, live: str, record: ContextRecord, n: int, seed: int) -> float:
    """1 - cosine(mean stage-1 embedding of n fresh stored texts, mean stored dataset embedding)."""
    docs = _sample_documents(svc, live, n, seed)
    if not docs:
        raise InvalidInput("drift: the collection has no documents to sample", field="drift")
    texts = [d["text"] for d in docs]
    fresh = svc.embedder.embed_context(texts, seed=seed).mean(axis=0)
    stored = np.asarray(record.dataset_embeddings, dtype=np.float64).mean(axis=0)
    fresh = np.asarray(fresh, dtype=np.float64)
    denom = float(np.linalg.norm(fresh) * np.linalg.norm(stored)) or 1.0
    return float(1.0 - float(fresh @ stored) / denom)


# ---- starting a rebuild --------------------------------------------------------------------------
@dataclass(frozen=True)
class RebuildBatch:
    """One batch of a rebuild job: point ids of the source version to re-embed."""

    job_id: str
    collection: str
    index: int
    point_ids: list[str] = field(default_factory=list)

    def as_args(self) -> list[Any]:
        return [self.job_id, self.collection, self.index, self.point_ids]


def rebuild_context(
    collection: str,
    *,
    sample_size: int | None = None,
    seed: int | None = None,
    context_texts: Sequence[str] | None = None,
    service: Cdeq,
    trigger: str = "manual",
    on_progress: Progress | None = None,
) -> str:
    """Rebuild the context of `collection` from its whole current corpus; returns the job id.

    Stage 1 runs once on a seeded sample (`sample_size` texts, default
    CDEQ_INGEST__CONTEXT_SAMPLE_SIZE) of every stored document, or on `context_texts`. Every
    document is re-embedded into the next version, which goes live when complete. With a queue
    the job runs on the workers and this returns at once; in-process it runs here first."""
    check_collection_name(collection)
    if trigger not in TRIGGERS:
        raise InvalidInput(f"trigger: one of {TRIGGERS}, got {trigger!r}", field="trigger")
    if sample_size is not None and (
        isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 2
    ):
        raise InvalidInput(
            f"sample_size: must be an integer >= 2, got {sample_size!r}", field="sample_size"
        )
    texts = _check_context_texts(context_texts)
    seed = _seed(service, seed)
    n = sample_size or service.settings.ingest.context_sample_size
    store = service.store
    with service.locks(collection):
        live = _live(service, collection)
        marker = store.load_rebuild_marker(collection)
        if marker is not None:
            if _job_active(service, marker.job_id):
                raise Conflict(
                    f"a rebuild of {collection!r} is already running (job {marker.job_id}, "
                    f"version {marker.target_version})"
                )
            _abandon(service, marker)  # its job died or expired: start over
        hashes = store.point_hashes(live)
        if texts is None:
            corpus = _sample_documents(service, live, n, seed, ids=sorted(hashes))
            if len({d["text"] for d in corpus}) < 2:
                raise InvalidInput(
                    f"collection {collection!r} has {len(hashes)} documents, too few to sample "
                    "a context from; ingest more, or give context texts",
                    field="collection",
                )
        else:
            corpus = [{"id": "", "text": t} for t in texts]
        if hashes:
            _require_texts(service, collection, live, sorted(hashes)[:1])
        ids = sorted(hashes)
        size = service.settings.ingest.batch_size
        # At least one (maybe empty) batch: it builds the context and finishes the job.
        chunks = [ids[i : i + size] for i in range(0, len(ids), size)] or [[]]
        job_id = uuid.uuid4().hex
        batches = [RebuildBatch(job_id, collection, i, c) for i, c in enumerate(chunks)]
        # One more "batch": the finish (catch-up, swap), so the job is done only once swapped.
        service.jobs.create(job_id, collection, len(ids), len(batches) + 1, corpus)
        target = store.next_context_version(collection)
        store.save_rebuild_marker(
            RebuildMarker(
                collection=collection,
                job_id=job_id,
                from_version=_version_of(live),
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
        len(batches),
    )
    if service.queued:
        try:
            for batch in batches:
                service.dispatcher.send_rebuild_batch(*batch.as_args())
        except StoreUnavailable as exc:
            _give_up(service, collection, job_id, f"could not queue all batches: {exc}")
            raise
        return job_id
    _run_here(service, batches, len(ids), on_progress)
    return job_id


def _run_here(
    svc: Cdeq, batches: list[RebuildBatch], total: int, on_progress: Progress | None
) -> None:
    done = 0
    for batch in batches:
        retries = 0
        while True:
            try:
                run_rebuild_batch(svc, batch)
                break
            except Exception as exc:  # the rebuild's failure policy decides
                countdown = rebuild_failed(svc, batch, exc, retries=retries)
                if countdown is None:
                    return
                time.sleep(countdown)
                retries += 1
        done += len(batch.point_ids)
        if on_progress is not None:
            on_progress(done, total)


# ---- running a rebuild -------------------------------------------------------------------------
def run_rebuild_batch(svc: Cdeq, batch: RebuildBatch) -> BatchOutcome | None:
    """Re-embed one batch into the target version, then finish the job if it was the last.

    Safe to repeat: a counted batch only looks whether the job still needs finishing."""
    jobs = svc.jobs
    status = jobs.status(batch.job_id)
    if status.finished:
        return None
    if jobs.batch_done(batch.job_id, batch.index):
        _maybe_finish(svc, batch.collection, batch.job_id)
        return None
    jobs.mark_running(batch.job_id)
    marker = _marker_of(svc, batch.collection, batch.job_id)
    target = _ensure_target(svc, marker, status)
    source = svc.store.physical_name(batch.collection, marker.from_version)
    docs = svc.store.fetch_stored(source, batch.point_ids)  # deleted meanwhile: left out
    truncated = _write(svc, batch.collection, docs, target)
    outcome = BatchOutcome(succeeded=len(docs), truncated=truncated)
    jobs.record_batch(batch.job_id, batch.index, outcome)
    _maybe_finish(svc, batch.collection, batch.job_id)
    return outcome


def rebuild_failed(
    svc: Cdeq, batch: RebuildBatch, exc: BaseException, *, retries: int
) -> float | None:
    """The failure policy of a rebuild batch: transient errors give a countdown (until
    `max_retries`); anything else fails the whole job and abandons the new version, leaving
    the live one as it was. None when not retried."""
    settings = svc.settings.ingest
    if isinstance(exc, TRANSIENT_ERRORS) and retries < settings.max_retries:
        return float(min(settings.retry_backoff_max_s, max(exc.retry_after_s, 2.0**retries)))
    if isinstance(exc, CdeqError):
        reason = str(exc)
    else:
        log.error("rebuild %s batch %d: internal error", batch.job_id, batch.index, exc_info=exc)
        reason = f"internal error: {type(exc).__name__}: {exc}"
    _give_up(svc, batch.collection, batch.job_id, f"rebuild failed: {reason}")
    return None


def _give_up(svc: Cdeq, collection: str, job_id: str, reason: str) -> None:
    log.error("rebuild job %s of %r: %s", job_id, collection, reason)
    svc.jobs.fail(job_id, reason)
    try:
        marker = svc.store.load_rebuild_marker(collection)
        if marker is not None and marker.job_id == job_id:
            _abandon(svc, marker)
    except CdeqError as exc:  # the next rebuild cleans up what is left
        log.warning("could not clean up the failed rebuild of %r: %s", collection, exc)


def _marker_of(svc: Cdeq, collection: str, job_id: str) -> RebuildMarker:
    marker = svc.store.load_rebuild_marker(collection)
    if marker is None or marker.job_id != job_id:
        raise Conflict(f"job {job_id} is no longer the rebuild of {collection!r}")
    return marker


def _ensure_target(svc: Cdeq, marker: RebuildMarker, status: JobStatus) -> Context:
    """The target context, built (stage 1 once, under the lock) by the first batch to need it."""
    contexts = svc.contexts
    try:
        return contexts.at_version(marker.collection, marker.target_version)
    except ContextNotReady:
        pass
    with svc.locks(marker.collection):
        try:
            return contexts.at_version(marker.collection, marker.target_version)
        except ContextNotReady:
            corpus = svc.jobs.context_sample(marker.job_id)
            if not corpus:
                raise Conflict(f"rebuild job {marker.job_id} lost its context sample") from None
            source = ContextSource(marker.source)
            return contexts.build_version(
                marker.collection,
                marker.target_version,
                corpus,
                source=source,
                trigger=marker.trigger,
                points_at_build=status.total if source == ContextSource.REBUILD else 0,
                seed=marker.seed,
            )


def _maybe_finish(svc: Cdeq, collection: str, job_id: str) -> None:
    status = svc.jobs.status(job_id)
    if not status.finished and status.batches_done >= status.batches - 1:
        finish_rebuild(svc, collection, job_id)


def finish_rebuild(svc: Cdeq, collection: str, job_id: str) -> None:
    """Catch up, check counts, make the new context ready, swap the alias, apply retention,
    and count the job's last step. Idempotent: a repeated call after a crash completes it."""
    store = svc.store
    with svc.locks(collection):
        status = svc.jobs.status(job_id)
        marker = store.load_rebuild_marker(collection)
        if marker is None or marker.job_id != job_id:
            return
        if status.finished:  # finished, but the marker was left behind by a crash
            store.clear_rebuild_marker(collection)
            return
        target = svc.contexts.at_version(collection, marker.target_version)
        source = store.physical_name(collection, marker.from_version)
        live = store.resolve(collection)
        if live != target.physical:
            if live != source:
                raise Conflict(f"the alias of {collection!r} moved to {live!r} during the rebuild")
            for _ in range(_CATCH_UP_PASSES):
                if catch_up(svc, collection, source, target) == 0:
                    break
            else:
                raise ContextNotReady(
                    f"{collection!r} keeps changing; the rebuild finishes on the next try",
                    retry_after_s=5.0,
                )
            have, want = store.count_physical(target.physical), store.count_physical(source)
            if have != want:
                raise ContextNotReady(
                    f"version {target.version} of {collection!r} holds {have} documents, the "
                    f"live one {want}; the rebuild finishes on the next try",
                    retry_after_s=2.0,
                )
            record = store.load_context(collection, target.version)
            if record is None:
                raise ContextNotReady(f"context {target.version} of {collection!r} vanished")
            store.save_context(_replace_state(record, "ready", points=have))
            store.set_alias(collection, target.physical)
        svc.contexts.forget(collection)
        removed = _apply_retention(svc, collection, target.version)
        svc.jobs.record_batch(job_id, status.batches - 1, BatchOutcome())
        store.clear_rebuild_marker(collection)
    log.info(
        "rebuild of %r done: version %d is live (removed versions %s)",
        collection,
        target.version,
        removed,
    )


def catch_up(svc: Cdeq, collection: str, source: str, target: Context) -> int:
    """Make `target` hold exactly the documents of the physical collection `source`: re-embed
    (with the target's context) every document missing or with another content hash there,
    delete those it has that `source` does not. Returns how many points it fixed."""
    store = svc.store
    have = store.point_hashes(source)
    there = store.point_hashes(target.physical)
    stale = sorted(pid for pid, h in have.items() if there.get(pid) != h)
    extra = sorted(pid for pid in there if pid not in have)
    if extra:
        store.delete_points(target.physical, extra)
    size = svc.settings.ingest.batch_size
    for start in range(0, len(stale), size):
        docs = store.fetch_stored(source, stale[start : start + size])
        _write(svc, collection, docs, target)
    if stale or extra:
        log.info(
            "catch-up of %r v%d: %d re-embedded, %d removed",
            collection,
            target.version,
            len(stale),
            len(extra),
        )
    return len(stale) + len(extra)


def _write(svc: Cdeq, collection: str, docs: Sequence[StoredDocument], target: Context) -> int:
    """Embed stored documents with `target`'s context into its physical collection."""
    if not docs:
        return 0
    missing = [d.document_id for d in docs if d.text is None]
    if missing:
        raise Conflict(_no_text_message(collection, missing[:5]))
    embeddings = svc.embedder.embed_documents(
        [d.text or "" for d in docs], target.dataset_embeddings
    )
    svc.store.upsert(
        target.physical,
        [
            PointRecord(
                document_id=d.document_id,
                vector=vector,
                text=d.text,
                metadata=d.metadata,
                content_hash=d.content_hash,
                context_version=target.version,
            )
            for d, vector in zip(docs, embeddings.vectors, strict=True)
        ],
    )
    return sum(embeddings.truncated)


# ---- writes during a rebuild -----------------------------------------------------------------------
def mirror_documents(
    svc: Cdeq, collection: str, written: Context, documents: Sequence[Document]
) -> None:
    """After an ingest batch wrote `written`, write it wherever else it must be: the target of
    a rebuild in progress, and the live version if the alias moved during the batch.

    Looking only after the write closes the race with a rebuild's catch-up: the catch-up runs
    after the target context exists, so a batch that finds no target wrote its documents
    before the catch-up read the live version."""
    store = svc.store
    targets: list[Context] = []
    marker = store.load_rebuild_marker(collection)
    if marker is not None and marker.target_version != written.version:
        # Before stage 1 has run there is no target yet: the rebuild's batches cover these.
        with contextlib.suppress(ContextNotReady):
            targets.append(svc.contexts.at_version(collection, marker.target_version))
    live = store.resolve(collection)
    if live is not None and live != written.physical and all(t.physical != live for t in targets):
        svc.contexts.forget(collection)
        targets.append(svc.contexts.current(collection))
    for target in targets:
        stored = [StoredDocument("", d.id, d.text, d.metadata, d.content_hash) for d in documents]
        try:
            _write(svc, collection, stored, target)
        except NotFound:  # the rebuild was abandoned and its collection dropped meanwhile
            log.info("version %d of %r is gone; not mirrored", target.version, collection)


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
        record = svc.store.load_context(collection, _version_of(live))
        if record is None:
            return None
        reason = _auto_reason(svc, record, svc.store.count_physical(live))
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
        _no_rebuild(service, collection, "roll back")
        live = _live(service, collection)
        version = _version_of(live)
        older = [v for v in _kept_versions(service, collection, version) if v < version]
        if not older:
            raise NotFound(
                f"collection {collection!r} has no previous context version to roll back to "
                "(none was kept, or it was pruned)"
            )
        previous = service.contexts.at_version(collection, max(older))
        service.contexts.check_model(previous)
        for _ in range(_CATCH_UP_PASSES):
            if catch_up(service, collection, live, previous) == 0:
                break
        store.set_alias(collection, previous.physical)
        service.contexts.forget(collection)
    log.info("rolled %r back from version %d to %d", collection, version, previous.version)
    return previous.version


def prune(collection: str, *, service: Cdeq) -> list[int]:
    """Delete every version of `collection` but the live one; returns the versions removed."""
    check_collection_name(collection)
    with service.locks(collection):
        _no_rebuild(service, collection, "prune")
        live = _live(service, collection)
        removed = _apply_retention(service, collection, _version_of(live), keep=0)
    return removed


def drop_collection(collection: str, *, service: Cdeq) -> None:
    """Delete `collection`: its alias, every physical collection and every context."""
    check_collection_name(collection)
    service.store.drop_collection(collection)
    service.contexts.forget(collection)


# ---- helpers ------------------------------------------------------------------------------------------
def _live(svc: Cdeq, collection: str) -> str:
    live = svc.store.resolve(collection)
    if live is None:
        raise NotFound(f"collection {collection!r} does not exist")
    return live


def _version_of(physical: str) -> int:
    parsed = parse_physical(physical)
    if parsed is None:
        raise CdeqError(f"{physical!r} is not a cdeq physical collection")
    return parsed[1]


def _seed(svc: Cdeq, seed: int | None) -> int:
    if seed is None:
        return svc.settings.ingest.context_seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInput(f"seed: must be an integer, got {seed!r}", field="seed")
    return seed


def _check_context_texts(texts: Sequence[str] | None) -> list[str] | None:
    if texts is None:
        return None
    if isinstance(texts, str) or not all(isinstance(t, str) and t.strip() for t in texts):
        raise InvalidInput(
            "context_texts: must be a list of non-empty strings", field="context_texts"
        )
    if len(set(texts)) < 2:
        raise InvalidInput(
            f"context_texts: {len(set(texts))} distinct texts; give at least 2 (a context of "
            "identical texts makes embeddings context-independent)",
            field="context_texts",
        )
    return list(texts)


def _sample_documents(
    svc: Cdeq, physical: str, n: int, seed: int, ids: list[str] | None = None
) -> list[dict[str, str]]:
    """A seeded sample of up to `n` stored documents of the whole physical collection."""
    if ids is None:
        ids = sorted(svc.store.point_hashes(physical))
    picked = ids if len(ids) <= n else sorted(random.Random(seed).sample(ids, n))
    docs = svc.store.fetch_stored(physical, picked)
    missing = [d.document_id for d in docs if d.text is None]
    if missing:
        collection = parse_physical(physical)
        raise Conflict(_no_text_message(collection[0] if collection else physical, missing[:5]))
    return [{"id": d.document_id, "text": (d.text or "")[:CONTEXT_TEXT_CHARS]} for d in docs]


def _require_texts(svc: Cdeq, collection: str, live: str, point_ids: list[str]) -> None:
    docs = svc.store.fetch_stored(live, point_ids)
    missing = [d.document_id for d in docs if d.text is None]
    if missing:
        raise Conflict(_no_text_message(collection, missing))


def _no_text_message(collection: str, document_ids: Sequence[str]) -> str:
    return (
        f"collection {collection!r} was stored without texts (CDEQ_QDRANT__STORE_TEXT=false; "
        f"e.g. documents {list(document_ids)}), so it cannot be re-embedded from Qdrant: "
        "re-ingest its documents from their source into a new collection instead"
    )


def _job_active(svc: Cdeq, job_id: str) -> bool:
    try:
        return not svc.jobs.status(job_id).finished
    except NotFound:
        return False


def _abandon(svc: Cdeq, marker: RebuildMarker) -> None:
    """Forget a rebuild that will not finish: its target version goes, unless it is live."""
    store = svc.store
    target = store.physical_name(marker.collection, marker.target_version)
    if store.resolve(marker.collection) != target:
        record = store.load_context(marker.collection, marker.target_version)
        if record is None or record.state != "ready":
            store.drop_physical(target)
            store.delete_context(marker.collection, marker.target_version)
    store.clear_rebuild_marker(marker.collection)
    svc.contexts.forget(marker.collection)


def _no_rebuild(svc: Cdeq, collection: str, action: str) -> None:
    marker = svc.store.load_rebuild_marker(collection)
    if marker is not None and _job_active(svc, marker.job_id):
        raise Conflict(
            f"cannot {action} {collection!r} while its rebuild runs (job {marker.job_id})"
        )


def _kept_versions(svc: Cdeq, collection: str, live_version: int) -> list[int]:
    """Versions other than the live one with a ready context and a physical collection."""
    ready = set(svc.store.context_versions(collection, ready_only=True))
    physical = {
        v
        for name in svc.store.physical_collections(collection)
        if (v := _version_of(name)) != live_version
    }
    return sorted(ready & physical, reverse=True)


def _apply_retention(
    svc: Cdeq, collection: str, live_version: int, keep: int | None = None
) -> list[int]:
    """Delete versions beyond the `keep` newest kept ones (default CDEQ_CONTEXT__KEEP_VERSIONS)."""
    keep = svc.settings.context.keep_versions if keep is None else keep
    store = svc.store
    ready = set(store.context_versions(collection, ready_only=False))
    physical = {_version_of(name) for name in store.physical_collections(collection)}
    others = sorted((ready | physical) - {live_version}, reverse=True)
    kept = [v for v in others if v in _kept_versions(svc, collection, live_version)][:keep]
    removed = [v for v in others if v not in kept]
    marker = store.load_rebuild_marker(collection)
    for version in removed:
        if marker is not None and version == marker.target_version:
            continue  # a rebuild in progress owns it
        store.drop_physical(store.physical_name(collection, version))
        store.delete_context(collection, version)
    svc.contexts.forget(collection)
    return removed


def _replace_state(record: ContextRecord, state: str, *, points: int) -> ContextRecord:
    return ContextRecord(
        collection=record.collection,
        version=record.version,
        dataset_embeddings=record.dataset_embeddings,
        sampled_ids=record.sampled_ids,
        model_id=record.model_id,
        created_at=record.created_at,
        state=state,
        source=record.source,
        points_at_build=points if record.source == ContextSource.REBUILD else 0,
        fingerprint=record.fingerprint,
        trigger=record.trigger,
    )


def _marker_dict(marker: RebuildMarker | None) -> dict[str, Any] | None:
    if marker is None:
        return None
    return {
        "job_id": marker.job_id,
        "from_version": marker.from_version,
        "target_version": marker.target_version,
        "trigger": marker.trigger,
        "started_at": marker.started_at,
    }
