"""Migrations: numbered, idempotent, recorded in Qdrant; run on every `store` backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from qdrant_client import models

from app.errors import CdeqError, InvalidInput
from app.store import PointRecord, QdrantStore
from migrations import LATEST_SCHEMA, MIGRATIONS, migrate


def snapshot(store: QdrantStore) -> dict[str, Any]:
    """Everything a migration could change: collections, aliases and the meta points."""
    client = store.client
    meta_points: list[tuple[str, Any]] = []
    if client.collection_exists(store.meta_collection):
        records, _ = client.scroll(store.meta_collection, limit=10_000, with_payload=True)
        meta_points = sorted((str(r.id), r.payload) for r in records)
    return {
        "collections": sorted(c.name for c in client.get_collections().collections),
        "aliases": sorted((a.alias_name, a.collection_name) for a in client.get_aliases().aliases),
        "meta": meta_points,
    }


def test_migrations_are_numbered_without_gaps() -> None:
    assert [m.number for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert MIGRATIONS[-1].number == LATEST_SCHEMA
    assert all(m.name for m in MIGRATIONS)


def test_fresh_store_is_at_schema_zero_and_refuses_work(store: QdrantStore) -> None:
    assert store.schema_version() == 0
    store.require_schema(0)
    with pytest.raises(CdeqError, match="run `cdeq migrate`"):
        store.require_schema(1)


def test_migrate_applies_everything_once(store: QdrantStore) -> None:
    messages: list[str] = []
    assert migrate(store, log=messages.append) == list(range(1, LATEST_SCHEMA + 1))
    assert store.schema_version() == LATEST_SCHEMA
    store.require_schema(LATEST_SCHEMA)
    assert len(messages) == LATEST_SCHEMA and "migration 1" in messages[0]

    before = snapshot(store)
    messages.clear()
    assert migrate(store, log=messages.append) == []
    assert snapshot(store) == before
    assert messages == [f"Qdrant schema is up to date (version {LATEST_SCHEMA})"]


def test_migrate_stops_at_target_and_resumes(store: QdrantStore) -> None:
    assert migrate(store, target=1) == [1]
    assert store.schema_version() == 1
    assert migrate(store, target=1) == []
    assert migrate(store) == list(range(2, LATEST_SCHEMA + 1))
    with pytest.raises(InvalidInput, match="not supported"):
        migrate(store, target=1)
    with pytest.raises(InvalidInput):
        migrate(store, target=LATEST_SCHEMA + 1)


def test_a_step_that_ran_but_was_not_recorded_runs_again_harmlessly(store: QdrantStore) -> None:
    MIGRATIONS[0].apply(store)  # a crash right after step 1, before its number was recorded
    assert store.schema_version() == 0
    assert migrate(store) == list(range(1, LATEST_SCHEMA + 1))


def test_newer_schema_than_this_code_is_refused(store: QdrantStore) -> None:
    migrate(store)
    store.set_schema_version(LATEST_SCHEMA + 1)
    with pytest.raises(CdeqError, match="upgrade cdeq"):
        migrate(store)


def test_payload_index_migration_covers_existing_collections(
    store: QdrantStore, uniq: Callable[[str], str], request: pytest.FixtureRequest
) -> None:
    migrate(store, target=1)
    name = uniq("old")
    physical = f"{name}__c1"
    # Made the way early versions did: no payload indexes.
    store.client.create_collection(
        physical, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT)
    )
    store.set_alias(name, physical)
    assert migrate(store) == list(range(2, LATEST_SCHEMA + 1))
    store.upsert(
        physical,
        [PointRecord("a", np.ones(4, np.float32) / 2, "t", {}, "h", 1)],
    )
    assert store.count(name) == 1
    if request.node.callspec.params["store"] in ("server", "container"):
        # Local mode keeps no payload schema; a server reports the indexes it holds.
        schema = store.client.get_collection(physical).payload_schema
        assert schema["document_id"].data_type == models.PayloadSchemaType.KEYWORD
        assert schema["context_version"].data_type == models.PayloadSchemaType.INTEGER
