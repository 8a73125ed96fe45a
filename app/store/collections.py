"""Physical collections and the aliases that make them user collections.

A user collection ``NAME`` is an alias onto the physical collection ``NAME__c<version>`` built
with context ``version`` (`app.names` owns that format). Switching the alias is one atomic
request, so readers never see a gap.
"""

from __future__ import annotations

from qdrant_client import models

from app import names
from app.errors import InvalidInput
from app.names import parse_physical
from app.store.base import StoreCore
from app.store.client import translated_errors
from app.store.records import CollectionInfo

SPARSE_VECTOR = "bm25"  # the named sparse vector of every physical collection made since #18


def only_chunk_zero() -> models.Filter:
    """Points that are a document's chunk 0 (or were written before chunking): one per document."""
    return models.Filter(
        should=[
            models.FieldCondition(key="chunk_index", match=models.MatchValue(value=0)),
            models.IsEmptyCondition(is_empty=models.PayloadField(key="chunk_index")),
        ]
    )


class Collections:
    """Creating, listing, aliasing and deleting the physical collections of user collections."""

    def __init__(self, core: StoreCore) -> None:
        self._core = core

    def physical_name(self, collection: str, version: int) -> str:
        self._core.check_name(collection)
        return names.physical_name(collection, version)

    def physical_collections(self, collection: str | None = None) -> list[str]:
        with translated_errors("listing collections"):
            existing = [c.name for c in self._core.client.get_collections().collections]
        found: list[tuple[str, int, str]] = []
        for name in existing:
            parsed = parse_physical(name)
            if (
                parsed is not None
                and name != self._core.meta_collection
                and (collection is None or parsed[0] == collection)
            ):
                found.append((parsed[0], parsed[1], name))
        return [name for _, _, name in sorted(found)]

    def ensure_physical(self, collection: str, version: int) -> str:
        physical = self.physical_name(collection, version)
        # The dense vector stays unnamed: LangChain's and LlamaIndex's Qdrant stores read it.
        # Qdrant applies BM25's IDF to the sparse one at search time, over the live points.
        self._core.create_if_absent(
            physical,
            models.VectorParams(size=self._core.dim, distance=models.Distance.DOT),
            {SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)},
        )
        self.ensure_point_indexes(physical)
        return physical

    def has_sparse(self, name: str) -> bool:
        """Whether the collection (or alias) ``name`` has the ``bm25`` sparse vectors: those
        made before them do not until a rebuild."""
        if name in self._core.sparse_known:
            return True
        with translated_errors(f"reading collection {name!r}", collection=name):
            info = self._core.client.get_collection(name)
        found = SPARSE_VECTOR in (info.config.params.sparse_vectors or {})
        if found and parse_physical(name) is not None:  # an alias may move: never cache one
            self._core.sparse_known.add(name)
        return found

    def ensure_point_indexes(self, physical: str) -> None:
        self._core.index(physical, "document_id", models.PayloadSchemaType.KEYWORD)
        self._core.index(physical, "context_version", models.PayloadSchemaType.INTEGER)
        # Trimming a document's stale chunks filters on it (chunk_index >= new count).
        self._core.index(physical, "chunk_index", models.PayloadSchemaType.INTEGER)

    def set_alias(self, collection: str, physical: str) -> None:
        self._core.check_name(collection)
        parsed = parse_physical(physical)
        if parsed is None or parsed[0] != collection:
            raise InvalidInput(f"{physical!r} is not a physical collection of {collection!r}")
        current = self.resolve(collection)
        if current == physical:
            return
        operations: list[models.AliasOperations] = []
        if current is not None:
            # Servers differ on deleting an absent alias; only delete one that is there.
            operations.append(_delete_alias(collection))
        operations.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=physical, alias_name=collection)
            )
        )
        with translated_errors(f"switching alias {collection!r}", collection=physical):
            self._core.client.update_collection_aliases(change_aliases_operations=operations)

    def resolve(self, collection: str) -> str | None:
        for alias_name, target in self._aliases():
            if alias_name == collection:
                return target
        return None

    def exists(self, collection: str) -> bool:
        return self.resolve(collection) is not None

    def list_collections(self) -> list[CollectionInfo]:
        infos: list[CollectionInfo] = []
        for alias_name, target in sorted(self._aliases()):
            if target == self._core.meta_collection:
                continue
            parsed = parse_physical(target)
            version = parsed[1] if parsed is not None and parsed[0] == alias_name else None
            with translated_errors("counting points", collection=alias_name):
                points = self._core.client.count(target, exact=True).count
                documents = self._core.client.count(
                    target, count_filter=only_chunk_zero(), exact=True
                ).count
            infos.append(
                CollectionInfo(
                    alias_name, target, points, version, documents, self.has_sparse(target)
                )
            )
        return infos

    def drop(self, collection: str, current: str | None, physicals: list[str]) -> None:
        """Delete the alias (when ``current`` says there is one), then ``physicals``."""
        if current is not None:
            # Alias first: the collection disappears for readers before its data does.
            with translated_errors(f"deleting alias {collection!r}"):
                self._core.client.update_collection_aliases(
                    change_aliases_operations=[_delete_alias(collection)]
                )
        for physical in physicals:
            with translated_errors(f"deleting collection {physical!r}"):
                self._core.client.delete_collection(physical)

    def _aliases(self) -> list[tuple[str, str]]:
        with translated_errors("listing aliases"):
            response = self._core.client.get_aliases()
        return [(a.alias_name, a.collection_name) for a in response.aliases]


def _delete_alias(collection: str) -> models.DeleteAliasOperation:
    return models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=collection))
