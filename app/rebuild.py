"""A context rebuild's versions: finish the job (catch-up, counted swap), write stored
documents into a version, mirror ingest writes into the new version while a rebuild runs, and
abandon a rebuild that will not finish. Its batches run in `app.rebuild_batches`; it is started
by `app.lifecycle.rebuild_context`, which has the whole picture."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Any

from app.contexts import Context
from app.errors import (
    CdeqError,
    Conflict,
    ContextNotReady,
    InvalidInput,
    ModelMismatch,
    NotFound,
)
from app.jobs import BatchOutcome
from app.jobs.records import CONTEXT_TEXT_CHARS
from app.names import parse_physical
from app.service import Cdeq
from app.sparse import carries_over, document_sparse
from app.store import ContextRecord, ContextSource, PointRecord, RebuildMarker, StoredDocument

log = logging.getLogger(__name__)

REBUILD_COUNTS_KEY = "cdeq:metrics:context_rebuilds"
TRIGGERS = ("manual", "auto-generic", "auto-growth")
CATCH_UP_PASSES = 5


# ---- finishing a rebuild ----------------------------------------------------------------------
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
            for _ in range(CATCH_UP_PASSES):
                if catch_up(svc, collection, source, target) == 0:
                    break
            else:
                raise ContextNotReady(
                    f"{collection!r} keeps changing; the rebuild finishes on the next try",
                    retry_after_s=5.0,
                )
            verify_version(svc, collection, target, store.count_physical(source))
            record = store.load_context(collection, target.version)
            if record is None:
                raise ContextNotReady(f"context {target.version} of {collection!r} vanished")
            documents = store.count_documents(target.physical)
            store.save_context(_replace_state(record, "ready", points=documents))
            store.set_alias(collection, target.physical)
        svc.contexts.forget(collection)
        removed = apply_retention(svc, collection, target.version)
        svc.jobs.record_batch(job_id, status.batches - 1, BatchOutcome())
        store.clear_rebuild_marker(collection)
    log.info(
        "rebuild of %r done: version %d is live (removed versions %s)",
        collection,
        target.version,
        removed,
    )


def verify_version(
    svc: Cdeq, collection: str, target: Context, want: int, *, unstamped: bool = True
) -> int:
    """Before `target` goes live (a rebuild's finish, a rollback): it holds `want` documents
    (ContextNotReady: try again) and every one was written by its model (ModelMismatch, when
    its context records one; `unstamped=False` lets points written before stamps pass, for
    versions as old as that). Returns the count."""
    store = svc.store
    have = store.count_physical(target.physical)
    if have != want:
        raise ContextNotReady(
            f"version {target.version} of {collection!r} holds {have} documents, the "
            f"live one {want}: not made live; the next try catches up again",
            retry_after_s=2.0,
        )
    if target.fingerprint:
        other = store.count_other_model(target.physical, target.fingerprint, unstamped=unstamped)
        if other:
            raise ModelMismatch(
                f"version {target.version} of {collection!r}: {other} of its {have} documents "
                f"were not written by its model {target.model_id!r} (fingerprint "
                f"{target.fingerprint[:12]}); run every worker with that model"
            )
    return have


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
    carry = carries_over(svc, source, target.physical)
    for start in range(0, len(stale), size):
        docs = store.fetch_stored(source, stale[start : start + size], sparse=carry)
        write_stored(svc, collection, docs, target)
    if stale or extra:
        log.info(
            "catch-up of %r v%d: %d re-embedded, %d removed",
            collection,
            target.version,
            len(stale),
            len(extra),
        )
    return len(stale) + len(extra)


def write_stored(
    svc: Cdeq,
    collection: str,
    docs: Sequence[StoredDocument],
    target: Context,
    *,
    trim: bool = False,
) -> list[bool]:
    """Embed stored chunks with `target`'s context into its physical collection, each as the
    same chunk (index, count, offsets) of its document. `trim`: then delete the chunks of
    these documents beyond their new count (a re-ingest of a shorter version); new chunks
    are written first, so a search finds each document throughout. Returns whether each
    chunk's text was cut at the model's window."""
    if not docs:
        return []
    missing = [d.document_id for d in docs if d.text is None]
    if missing:
        raise Conflict(_no_text_message(collection, missing[:5]))
    stamp = svc.contexts.writer_fingerprint(target)  # never another model's vectors in it
    texts = [d.text or "" for d in docs]
    embeddings = svc.embedder.embed_documents(texts, target.dataset_embeddings)
    # Sparse vectors do not depend on the context: those read with the documents (the caller
    # fetched them only when `carries_over` allowed) are copied, the others computed.
    carried = [(d.sparse, d.sparse_terms) if d.sparse is not None else None for d in docs]
    sparse = document_sparse(svc, target.physical, texts, carried)
    if sparse is not None and any(c is not None for c in carried):
        log.debug(
            "%r v%d: %d sparse vectors carried over, %d computed",
            collection,
            target.version,
            sum(c is not None for c in carried),
            sum(c is None for c in carried),
        )
    write_points(
        svc,
        target.physical,
        [
            PointRecord(
                document_id=d.document_id,
                vector=vector,
                text=d.text,
                metadata=d.metadata,
                content_hash=d.content_hash,
                context_version=target.version,
                chunk_index=d.chunk_index,
                chunk_count=d.chunk_count,
                char_start=d.char_start,
                char_end=d.char_end,
                sparse=sparse[i][0] if sparse else None,
                sparse_terms=sparse[i][1] if sparse else 0,
                model_fingerprint=stamp,
            )
            for i, (d, vector) in enumerate(zip(docs, embeddings.vectors, strict=True))
        ],
        trim=trim,
    )
    return [bool(cut) for cut in embeddings.truncated]


def write_points(svc: Cdeq, physical: str, records: Sequence[PointRecord], *, trim: bool) -> None:
    """Upsert chunk points; `trim`: these are whole new versions of their documents, so
    delete the chunks a longer earlier version left.

    Trimming writes chunk 0 last: until the stale chunks are gone it still records the old
    count, so a write that dies part-way trims in full when it runs again, and the document
    is found throughout (its chunk 0 is never absent)."""
    store = svc.store
    if not trim:
        store.upsert(physical, records)
        return
    counts = {r.document_id: r.chunk_count for r in records}
    previous = store.chunk_counts(physical, list(counts))
    rest = [r for r in records if r.chunk_index > 0]
    if rest:
        store.upsert(physical, rest)
    store.delete_stale_chunks(physical, counts, previous)
    store.upsert(physical, [r for r in records if r.chunk_index == 0])


# ---- writes during a rebuild -----------------------------------------------------------------------
def mirror_documents(
    svc: Cdeq, collection: str, written: Context, chunks: Sequence[StoredDocument]
) -> None:
    """After an ingest batch wrote its documents' `chunks` into `written`, write them wherever
    else they must be: the target of a rebuild in progress, and the live version if the alias
    moved during the batch (stale chunks trimmed there too).

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
        try:
            write_stored(svc, collection, chunks, target, trim=True)
        except NotFound:  # the rebuild was abandoned and its collection dropped meanwhile
            log.info("version %d of %r is gone; not mirrored", target.version, collection)
        except ModelMismatch as exc:
            if target.physical == store.resolve(collection):
                raise  # the live version: this batch fails with the reason
            # A rebuild onto another model: its finish re-embeds these (catch-up).
            log.warning("not mirrored into the rebuild of %r: %s", collection, exc)


# ---- helpers ------------------------------------------------------------------------------------------
def live_physical(svc: Cdeq, collection: str) -> str:
    live = svc.store.resolve(collection)
    if live is None:
        raise NotFound(f"collection {collection!r} does not exist")
    return live


def version_of(physical: str) -> int:
    parsed = parse_physical(physical)
    if parsed is None:
        raise CdeqError(f"{physical!r} is not a cdeq physical collection")
    return parsed[1]


def rebuild_seed(svc: Cdeq, seed: int | None) -> int:
    if seed is None:
        return svc.settings.ingest.context_seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInput(f"seed: must be an integer, got {seed!r}", field="seed")
    return seed


def check_context_texts(texts: Sequence[str] | None) -> list[str] | None:
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


def sample_documents(
    svc: Cdeq, physical: str, n: int, seed: int, ids: list[str] | None = None
) -> list[dict[str, str]]:
    """A seeded sample of up to `n` stored chunks of the whole physical collection, at most
    CDEQ_CONTEXT__MAX_CHUNKS_PER_DOCUMENT of each document, so a few long documents cannot
    fill a context. Chunks over a document's share are replaced by others, drawn the same
    seeded way, until `n` or none is left."""
    if ids is None:
        ids = sorted(svc.store.point_hashes(physical))
    cap = svc.settings.context.max_chunks_per_document
    rng = random.Random(seed)
    # The first draw is the sample of before chunking, so one-chunk collections keep theirs.
    picked = ids if len(ids) <= n else sorted(rng.sample(ids, n))
    rest = sorted(set(ids) - set(picked))
    rng.shuffle(rest)
    taken: dict[str, int] = {}
    docs: list[StoredDocument] = []
    while picked:
        for doc in svc.store.fetch_stored(physical, picked):
            if taken.get(doc.document_id, 0) < cap:
                taken[doc.document_id] = taken.get(doc.document_id, 0) + 1
                docs.append(doc)
        wanted = n - len(docs)
        picked, rest = rest[:wanted], rest[wanted:]
    missing = [d.document_id for d in docs if d.text is None]
    if missing:
        collection = parse_physical(physical)
        raise Conflict(_no_text_message(collection[0] if collection else physical, missing[:5]))
    return [{"id": d.document_id, "text": (d.text or "")[:CONTEXT_TEXT_CHARS]} for d in docs]


def require_texts(svc: Cdeq, collection: str, live: str, point_ids: list[str]) -> None:
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


def job_active(svc: Cdeq, job_id: str) -> bool:
    try:
        return not svc.jobs.status(job_id).finished
    except NotFound:
        return False


def abandon(svc: Cdeq, marker: RebuildMarker) -> None:
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


def no_rebuild(svc: Cdeq, collection: str, action: str) -> None:
    marker = svc.store.load_rebuild_marker(collection)
    if marker is not None and job_active(svc, marker.job_id):
        raise Conflict(
            f"cannot {action} {collection!r} while its rebuild runs (job {marker.job_id})"
        )


def kept_versions(svc: Cdeq, collection: str, live_version: int) -> list[int]:
    """Versions other than the live one with a ready context and a physical collection."""
    ready = set(svc.store.context_versions(collection, ready_only=True))
    physical = {
        v
        for name in svc.store.physical_collections(collection)
        if (v := version_of(name)) != live_version
    }
    return sorted(ready & physical, reverse=True)


def apply_retention(
    svc: Cdeq, collection: str, live_version: int, keep: int | None = None
) -> list[int]:
    """Delete versions beyond the `keep` newest kept ones (default CDEQ_CONTEXT__KEEP_VERSIONS)."""
    keep = svc.settings.context.keep_versions if keep is None else keep
    store = svc.store
    ready = set(store.context_versions(collection, ready_only=False))
    physical = {version_of(name) for name in store.physical_collections(collection)}
    others = sorted((ready | physical) - {live_version}, reverse=True)
    kept = [v for v in others if v in kept_versions(svc, collection, live_version)][:keep]
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
        sampled_chunks=record.sampled_chunks,
    )


def marker_dict(marker: RebuildMarker | None) -> dict[str, Any] | None:
    if marker is None:
        return None
    return {
        "job_id": marker.job_id,
        "from_version": marker.from_version,
        "target_version": marker.target_version,
        "trigger": marker.trigger,
        "started_at": marker.started_at,
    }
