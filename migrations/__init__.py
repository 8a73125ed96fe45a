"""Numbered, idempotent steps that shape Qdrant, and ``migrate``, which applies the missing ones.

The applied number is recorded in Qdrant itself (the schema point of the meta collection), so
every process that shares a Qdrant agrees on it. Steps only move forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.errors import CdeqError, InvalidInput
from app.store import QdrantStore
from migrations import m0001_meta_collection, m0002_payload_indexes, m0003_chunk_indexes


@dataclass(frozen=True)
class Migration:
    """One step: ``apply`` must be safe to run again after a crash part-way through."""

    number: int
    name: str
    apply: Callable[[QdrantStore], None]


MIGRATIONS: list[Migration] = [
    Migration(module.NUMBER, module.NAME, module.apply)
    for module in (m0001_meta_collection, m0002_payload_indexes, m0003_chunk_indexes)
]
LATEST_SCHEMA = MIGRATIONS[-1].number

if [m.number for m in MIGRATIONS] != list(range(1, len(MIGRATIONS) + 1)):
    raise RuntimeError("migrations must be numbered 1, 2, 3, … without gaps")  # a packaging bug


def migrate(
    store: QdrantStore,
    *,
    target: int | None = None,
    log: Callable[[str], None] | None = None,
) -> list[int]:
    """Apply every migration above the recorded version up to ``target`` (default: the latest).

    Each step's number is recorded as soon as it succeeds, so a crash resumes where it stopped.
    Returns the numbers applied (empty when already up to date).
    """
    goal = LATEST_SCHEMA if target is None else target
    if isinstance(goal, bool) or not isinstance(goal, int) or not 0 <= goal <= LATEST_SCHEMA:
        raise InvalidInput(f"target must be between 0 and {LATEST_SCHEMA}, got {target!r}")
    current = store.schema_version()
    if current > LATEST_SCHEMA:
        raise CdeqError(
            f"Qdrant schema is at version {current}, newer than this cdeq knows "
            f"({LATEST_SCHEMA}): upgrade cdeq"
        )
    if goal < current:
        raise InvalidInput(
            f"Qdrant schema is at version {current}; migrating down to {goal} is not supported"
        )
    applied: list[int] = []
    for migration in MIGRATIONS:
        if current < migration.number <= goal:
            if log is not None:
                log(f"applying migration {migration.number}: {migration.name}")
            migration.apply(store)
            store.set_schema_version(migration.number)
            applied.append(migration.number)
    if log is not None and not applied:
        log(f"Qdrant schema is up to date (version {current})")
    return applied


__all__ = ["LATEST_SCHEMA", "MIGRATIONS", "Migration", "migrate"]
