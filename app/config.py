"""Settings: one root class, nested groups, env prefix `CDEQ_`, `__` for nesting.

Nothing reads the environment at import time: entry points call `load_settings()` once and
pass the values down as plain arguments. Values come from the environment, then from a `.env`
file in the current directory (the environment wins).
Example: `CDEQ_QDRANT__URL=http://qdrant:6333`, `CDEQ_API__KEYS='["k1","k2"]'` (or `k1,k2`).

`load_settings` also turns every operator mistake into a clear message: an invalid value
raises one `InvalidInput` with a line per variable, and an unknown `CDEQ_*` name (a typo such
as `CDEQ_QDRANT__ULR`) is logged as a warning naming the closest valid one.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from app.errors import InvalidInput

log = logging.getLogger(__name__)

ENV_PREFIX = "CDEQ_"
ENV_FILE = ".env"
# CDEQ_* variables that are not settings but are read by entry points or tests.
OTHER_VARIABLES = frozenset({"CDEQ_LOG_LEVEL", "CDEQ_V2_WEIGHTS", "CDEQ_V2_NQ"})
_IGNORED_PREFIXES = ("CDEQ_TEST_",)


class ModelSettings(BaseModel):
    name: str = Field(
        "jxm/cde-small-v1", description="Hugging Face hub id or local checkpoint folder"
    )
    device: str = Field(
        "auto", description="'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1', …"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    token_budget: int | None = Field(
        None,
        ge=1032,
        description="tokens per forward batch incl. the 520-token prefix; default by device",
    )
    v2_head: Literal["training", "hub"] = Field(
        "training",
        description="cde-small-v2 stage-2 head: 'training' (GitHub training code) or 'hub' "
        "(hub remote code), see docs/models.md; ignored for v1",
    )


class RedisSettings(BaseModel):
    url: str | None = Field(
        None,
        description="redis://host:6379/0; unset = in-process mode (no queue: jobs run in the calling process)",
    )


class QdrantSettings(BaseModel):
    url: str | None = Field(None, description="http://host:6333; unset = local mode on `path`")
    api_key: SecretStr | None = None
    path: str = Field(
        "./cdeq-data", description="local-mode folder (or ':memory:') when url is unset"
    )
    timeout_s: float = Field(30.0, gt=0)
    upsert_batch_size: int = Field(256, ge=1, le=10_000, description="points per upsert request")
    store_text: bool = Field(True, description="keep each document's text in its payload")


class IngestSettings(BaseModel):
    batch_size: int = Field(64, ge=1, le=10_000, description="documents per worker task")
    max_documents_per_job: int = Field(100_000, ge=1)
    max_text_chars: int = Field(
        2_000_000, ge=1, le=100_000_000, description="longest accepted document text"
    )
    chunking: Literal["auto", "off"] = Field(
        "auto",
        description="'auto': a text longer than the model's window is split into chunks, one "
        "point each; 'off': it is truncated to the window (with a warning)",
    )
    chunk_tokens: int | None = Field(
        None,
        ge=16,
        le=8192,
        description="tokens per chunk; default: the model's window after the document prefix "
        "(must fit it)",
    )
    chunk_overlap_tokens: int | None = Field(
        None,
        ge=0,
        le=4096,
        description="tokens consecutive chunks share; default about 12% of the chunk budget",
    )
    max_chunks_per_document: int = Field(
        4000,
        ge=1,
        le=1_000_000,
        description="chunks embedded per document at most; the rest is left out, with a warning",
    )
    max_metadata_bytes: int = Field(
        64 * 1024, ge=2, description="largest accepted metadata of a document, as UTF-8 JSON"
    )
    min_context_documents: int = Field(
        32, ge=2, description="fewer documents than this in a first ingest → generic context"
    )
    context_seed: int = 0
    context_sample_size: int = Field(
        512,
        ge=2,
        description="documents of a first job kept to build the context (cde-small-v1: 512)",
    )
    task_soft_time_limit_s: int = Field(900, ge=1)
    task_time_limit_s: int = Field(960, ge=1)
    visibility_timeout_s: int | None = Field(
        None,
        ge=1,
        description="broker re-delivers an unacked task after this; default: task limit + backoff + 300",
    )
    max_retries: int = Field(20, ge=0)
    retry_backoff_max_s: int = Field(60, ge=1)
    context_lock_timeout_s: int = Field(
        60,
        ge=1,
        description="TTL of a context build's lock, renewed while the build runs: a dead "
        "builder's lock expires within this",
    )
    context_lock_wait_s: float = Field(
        10.0,
        ge=0,
        description="how long a batch waits for a context lock held by another worker before "
        "it is retried (ContextNotReady)",
    )
    job_ttl_s: int = Field(
        7 * 24 * 3600, ge=60, description="how long job records are kept in Redis"
    )
    # ---- recovery: leases, reconciler, crash caps (queued mode) ----
    max_deliveries: int = Field(
        3, ge=1, description="a batch whose worker crashed this many times fails"
    )
    lease_ttl_s: float = Field(
        60.0, gt=0, le=3600, description="a batch without a heartbeat for this long is re-queued"
    )
    heartbeat_s: float = Field(
        10.0, gt=0, description="how often a worker renews the leases of its running batches"
    )
    reconcile_interval_s: float = Field(
        30.0, gt=0, description="how often a worker looks for expired leases and stalled jobs"
    )
    job_deadline_s: float = Field(
        900.0,
        gt=0,
        description="a job with no worker activity (nothing leased, nothing queued) for this "
        "long has its remaining batches failed",
    )
    worker_max_memory_per_child: int | None = Field(
        None, ge=1, description="KiB of resident memory after which a pool process is replaced"
    )

    @model_validator(mode="after")
    def _limits_ordered(self) -> IngestSettings:
        if (
            self.chunk_tokens is not None
            and self.chunk_overlap_tokens is not None
            and self.chunk_overlap_tokens * 2 > self.chunk_tokens
        ):
            raise ValueError(
                f"CHUNK_OVERLAP_TOKENS ({self.chunk_overlap_tokens}) must be at most half of "
                f"CHUNK_TOKENS ({self.chunk_tokens})"
            )
        if self.task_time_limit_s <= self.task_soft_time_limit_s:
            raise ValueError(
                f"TASK_TIME_LIMIT_S ({self.task_time_limit_s}) must exceed "
                f"TASK_SOFT_TIME_LIMIT_S ({self.task_soft_time_limit_s})"
            )
        if self.heartbeat_s >= self.lease_ttl_s:
            raise ValueError(
                f"heartbeat_s ({self.heartbeat_s}) must be shorter than lease_ttl_s "
                f"({self.lease_ttl_s}), or live batches would look dead"
            )
        return self


class ContextSettings(BaseModel):
    """How contexts follow their corpus: rebuilds, the automatic upgrade policy, retention."""

    auto_rebuild: bool = Field(
        True,
        description="after an ingest job: rebuild a generic context once the collection has "
        "enough documents, or any corpus context whose growth exceeds rebuild_growth",
    )
    rebuild_growth: float = Field(
        4.0, gt=1.0, description="points now / points at build above this → automatic rebuild"
    )
    keep_versions: int = Field(
        1, ge=0, description="previous context versions kept for rollback after a rebuild"
    )
    drift_sample: int = Field(
        64, ge=2, le=10_000, description="stored texts sampled for the drift figure"
    )
    max_chunks_per_document: int = Field(
        1,
        ge=1,
        le=512,
        description="chunks of one document a context sample may hold, so a few long "
        "documents cannot fill the context",
    )


KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A glob over collection names: their characters, plus fnmatch's `*`, `?` and `[...]` classes.
_GLOB_CHARS = re.compile(r"[a-z0-9_\-*?\[\]!]{1,100}")
_GLOB_CLASS = re.compile(r"\[!?[a-z0-9_-]+\]")
_SHA256 = re.compile(r"[0-9a-f]{64}")
AccessName = Literal["read", "write", "admin"]


def glob_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable collection glob, or None when it is."""
    if not _GLOB_CHARS.fullmatch(pattern):
        return (
            f"{pattern[:60]!r} is not a collection glob: use 1-100 of the characters of "
            "collection names (lower-case letters, digits, '_', '-') and '*', '?', '[...]'"
        )
    if "[" in _GLOB_CLASS.sub("", pattern) or "]" in _GLOB_CLASS.sub("", pattern):
        return f"{pattern!r}: an unclosed or empty '[...]' class"
    return None


class ApiKey(BaseModel):
    """One API key with a name, an access level and the collections it may reach (globs).

    Exactly one of `key` (the key itself) or `sha256` (its hex digest, from `cdeq keys hash`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        description="how logs, metrics and `cdeq config` call this key (never the key itself)"
    )
    key: SecretStr | None = Field(None, description="the key itself")
    sha256: SecretStr | None = Field(None, description="the key's sha256, 64 hex digits")
    access: AccessName = Field(
        description="read: search, embed, context, jobs; write: + ingest and delete; "
        "admin: + create, rebuild, rollback, prune, drop"
    )
    collections: list[str] | None = Field(
        None, description="glob patterns of collection names; absent = every collection"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not KEY_NAME.fullmatch(value):
            raise ValueError(
                "a key name is 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                "or digit"
            )
        return value

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            digest = value.get_secret_value().strip().lower()
            if not _SHA256.fullmatch(digest):
                raise ValueError("must be 64 hex digits (`cdeq keys hash` prints it)")
            return SecretStr(digest)
        return value

    @field_validator("collections")
    @classmethod
    def _globs(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if not value:
            raise ValueError(
                "empty list: give at least one pattern, or omit it for every collection"
            )
        problems = [p for g in value if (p := glob_problem(g))]
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> ApiKey:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError(f"key {self.name!r}: give exactly one of 'key' or 'sha256'")
        return self

    def summary(self) -> dict[str, Any]:
        """Name and scope, for `cdeq config`: never the key or its hash."""
        return {
            "name": self.name,
            "access": self.access,
            "collections": list(self.collections) if self.collections is not None else ["*"],
            "stored_as": "key" if self.key is not None else "sha256",
        }


def _entry_kind(value: Any) -> str | None:
    if isinstance(value, str | SecretStr):
        return "plain"
    if isinstance(value, Mapping | ApiKey):
        return "scoped"
    return None


KeyEntry = Annotated[
    Annotated[SecretStr, Tag("plain")] | Annotated[ApiKey, Tag("scoped")],
    Discriminator(
        _entry_kind,
        custom_error_type="key_entry",
        custom_error_message='must be a key (a string) or an object {"name", "key" or '
        '"sha256", "access", "collections"?}',
    ),
]
_ENTRY_TAGS = frozenset({"plain", "scoped"})


def _key_list(value: Any, *, variable: str) -> Any:
    """The value of a key list variable: a JSON list, or (not starting with '[') a
    comma-separated list of plain keys such as `CDEQ_API__KEYS=key1,key2`."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return []
    if text.startswith(("[", "{")):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"not valid JSON ({exc.msg} at column {exc.colno}); give a JSON list, or "
                f"plain keys separated by commas ({variable}=key1,key2)"
            ) from None
        return parsed
    keys = [part.strip() for part in text.split(",")]
    if any(not key for key in keys):
        raise ValueError(
            "an empty key in the comma-separated list; give a JSON list, or plain keys "
            f"separated by single commas ({variable}=key1,key2)"
        )
    return keys


class SearchSettings(BaseModel):
    """Sparse BM25 vectors beside the dense ones, and how a search ranks (docs/search-modes.md)."""

    sparse: bool = Field(
        True, description="write a BM25 sparse vector (`bm25`) beside each point's dense vector"
    )
    mode: Literal["dense", "sparse", "hybrid"] = Field(
        "dense", description="a search's mode when the request names none"
    )
    fusion: Literal["rrf", "dbsf"] = Field("rrf", description="how hybrid fuses its two lists")
    rrf_k: int = Field(2, ge=1, le=10_000, description="RRF: score = sum of 1 / (k + rank)")
    dense_prefetch: int = Field(
        100, ge=1, le=10_000, description="hybrid: dense candidates fused (at least top_k)"
    )
    sparse_prefetch: int = Field(
        100, ge=1, le=10_000, description="hybrid: sparse candidates fused (at least top_k)"
    )
    bm25_k1: float = Field(1.2, ge=0.0, le=100.0, description="BM25 term-frequency saturation")
    bm25_b: float = Field(0.75, ge=0.0, le=1.0, description="BM25 length normalisation")
    bm25_terms: Literal["words", "pieces"] = Field(
        "words", description="BM25 terms: the tokenizer's lower-cased words, or its word pieces"
    )


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    keys: Annotated[list[KeyEntry], NoDecode] = Field(
        default_factory=list,
        description="API keys: plain strings (admin on every collection) or objects with a "
        "name, access and collections (docs/api-keys.md); a JSON list or key1,key2",
    )
    read_only_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="plain keys with read access to every collection; a JSON list or key1,key2",
    )

    @field_validator("keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: Any) -> Any:
        return _key_list(value, variable="CDEQ_API__KEYS")

    @field_validator("read_only_keys", mode="before")
    @classmethod
    def _parse_read_only_keys(cls, value: Any) -> Any:
        return _key_list(value, variable="CDEQ_API__READ_ONLY_KEYS")

    def key_entries(self) -> list[ApiKey]:
        """Every configured key as an `ApiKey`: a plain key of `keys` is admin on every
        collection (what it always could do), one of `read_only_keys` read on every one; both
        are named after their place (`CDEQ_API__KEYS[0]`), never after the key."""
        entries: list[ApiKey] = []
        for i, entry in enumerate(self.keys):
            if isinstance(entry, ApiKey):
                entries.append(entry)
            else:
                entries.append(
                    ApiKey.model_construct(
                        name=f"CDEQ_API__KEYS[{i}]",
                        key=entry,
                        sha256=None,
                        access="admin",
                        collections=None,
                    )
                )
        for i, key in enumerate(self.read_only_keys):
            entries.append(
                ApiKey.model_construct(
                    name=f"CDEQ_API__READ_ONLY_KEYS[{i}]",
                    key=key,
                    sha256=None,
                    access="read",
                    collections=None,
                )
            )
        return entries

    allow_open: bool = Field(False, description="serve without keys on a non-loopback address")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_inputs: int = Field(2048, ge=1, description="inputs per /v1/embeddings request")
    max_ingest_in_flight: int = Field(
        4, ge=1, description="queued ingest requests being validated and queued at once; more → 429"
    )
    in_flight_wait_ms: int = Field(
        5,
        ge=0,
        le=1000,
        description="how long a queued ingest request may wait for a slot before a 429",
    )
    model_name: str | None = Field(
        None,
        description="the `model` name the API reports; default: the checkpoint's family "
        "(cde-small-v1 or cde-small-v2)",
    )
    process_metrics: bool = Field(
        True,
        description="/metrics also shows prometheus_client's process (CPU, memory, open files) "
        "and Python (version, garbage collector) metrics",
    )


class ServeSettings(BaseModel):
    """The API process's model server: one batching queue in front of the model."""

    batching: bool = Field(
        True,
        description="pack concurrent requests into shared forwards; false: each request runs "
        "its own forward in its own thread (the per-request path)",
    )
    max_wait_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="how long a forward waits for more requests to pack while another forward "
        "runs (an idle model starts at once)",
    )
    max_batch: int = Field(256, ge=1, le=65_536, description="texts per packed forward")
    model_threads: int = Field(
        2,
        ge=1,
        le=64,
        description="packed forwards that may run at once (each takes the next batch): one "
        "packs while another computes; each holds its own activations",
    )
    max_batch_tokens: int | None = Field(
        None,
        ge=1032,
        description="tokens (prefix included) per packed forward; default: the model's token budget",
    )
    max_queue_tokens: int = Field(
        2_000_000,
        ge=1,
        description="tokens (prefix included) waiting or running at once; more → 429",
    )
    cache_size: int = Field(
        10_000, ge=0, description="query embeddings kept in the LRU cache; 0 turns it off"
    )


class LogSettings(BaseModel):
    format: Literal["text", "json"] = Field(
        "text", description="'json': one JSON object per line, with the request id"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        protected_namespaces=(),
    )

    model: ModelSettings = Field(default_factory=ModelSettings)  # type: ignore[arg-type]
    redis: RedisSettings = Field(default_factory=RedisSettings)  # type: ignore[arg-type]
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings)  # type: ignore[arg-type]
    ingest: IngestSettings = Field(default_factory=IngestSettings)  # type: ignore[arg-type]
    api: ApiSettings = Field(default_factory=ApiSettings)  # type: ignore[arg-type]
    serve: ServeSettings = Field(default_factory=ServeSettings)  # type: ignore[arg-type]
    log: LogSettings = Field(default_factory=LogSettings)  # type: ignore[arg-type]
    context: ContextSettings = Field(default_factory=ContextSettings)  # type: ignore[arg-type]
    search: SearchSettings = Field(default_factory=SearchSettings)  # type: ignore[arg-type]


def variable_names() -> list[str]:
    """Every CDEQ_* variable that is a setting: each group (as JSON) and each of its fields."""
    names = []
    for group, info in Settings.model_fields.items():
        names.append(f"{ENV_PREFIX}{group.upper()}")
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            names.extend(f"{ENV_PREFIX}{group.upper()}__{f.upper()}" for f in model.model_fields)
    return names


def unknown_variables(environ: Iterable[str], dotenv: Iterable[str] = ()) -> list[str]:
    """A warning for each CDEQ_* name that no setting reads, naming the closest valid one.

    In a `.env` file, names without `__` are docker compose's own variables (see
    .env.example), not cdeq settings, so they are left alone."""
    valid = variable_names()
    known = set(valid) | OTHER_VARIABLES
    found = [(name, "the environment") for name in environ]
    found += [(name, ENV_FILE) for name in dotenv if "__" in name]
    warnings = []
    for name, source in found:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        if upper.startswith(_IGNORED_PREFIXES):
            continue
        close = difflib.get_close_matches(upper, valid, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "`cdeq config` lists the settings"
        warnings.append(f"{name} (in {source}) is not a cdeq setting and is ignored: {hint}")
    return warnings


def _dotenv_names(path: Path) -> list[str]:
    if not path.is_file():
        return []
    from dotenv import dotenv_values  # pydantic-settings' own .env reader

    try:
        return list(dotenv_values(path, encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return []  # pydantic-settings reports an unreadable .env itself


def _shown_input(name: str, value: Any) -> str:
    if any(word in name for word in ("KEY", "PASSWORD", "SECRET", "TOKEN")):
        return ""  # never echo what may be a secret
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > 60:
        text = text[:60] + "…"
    return f" (got {text!r})"


def settings_problems(exc: ValidationError) -> list[str]:
    """One line per invalid value, naming the variable that sets it."""
    problems = []
    for error in exc.errors(include_url=False):
        # Tags of a union (`plain`/`scoped` key entries) are pydantic's, not the user's.
        loc = [part for part in error["loc"] if part not in _ENTRY_TAGS]
        name = ENV_PREFIX + "__".join(str(part).upper() for part in loc[:2])
        for part in loc[2:]:  # an item of a list setting, a field of an object item
            name += f"[{part}]" if isinstance(part, int) else f".{part}"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden" and name.startswith(f"{ENV_PREFIX}API__KEYS["):
            message = f"unknown field; an API key object has {', '.join(ApiKey.model_fields)}"
        shown = _shown_input(name, error.get("input")) if len(loc) >= 2 else ""
        problems.append(f"{name}: {message}{shown}")
    return problems


def load_settings(**overrides: object) -> Settings:
    """Read the environment and `.env` now (never at import) and apply explicit overrides.

    Logs a warning for each unknown CDEQ_* variable; raises `InvalidInput` listing every
    invalid value, one line per variable."""
    for warning in unknown_variables(os.environ, _dotenv_names(Path(ENV_FILE))):
        log.warning("%s", warning)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise InvalidInput(settings_problems(exc), field="settings") from None
    except SettingsError as exc:  # a list or mapping setting whose value is not JSON
        raise InvalidInput(_not_json(os.environ, exc), field="settings") from None


def _not_json(environ: Mapping[str, str], exc: SettingsError) -> list[str]:
    """One line per CDEQ_* variable of a list or mapping setting whose value is not JSON."""
    problems = []
    for name, value in sorted(environ.items()):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or not value.strip()[:1].isalnum():
            continue
        if upper in variable_names() and _is_collection_setting(upper):
            # The value is not shown: it may be a secret (API keys).
            problems.append(
                f"{upper}: not JSON; a list is written as JSON, e.g. "
                f'{upper}=\'["first", "second"]\''
            )
    return problems or [f"a CDEQ_* setting could not be read: {exc}"]


def _is_collection_setting(variable: str) -> bool:
    group, _, name = variable[len(ENV_PREFIX) :].lower().partition("__")
    model = Settings.model_fields.get(group)
    if model is None or model.annotation is None or not name:
        return False
    field = getattr(model.annotation, "model_fields", {}).get(name)
    if field is None:
        return False
    text = str(field.annotation)
    return text.startswith(("list", "dict", "tuple", "set")) or "list[" in text


def effective_settings(settings: Settings) -> dict[str, Any]:
    """Every setting by its variable name, as JSON values; secrets masked, unset ones None.
    API keys show as their names and scopes, never the keys or their hashes."""
    values: dict[str, Any] = {}
    for group in Settings.model_fields:
        model = getattr(settings, group)
        for name in type(model).model_fields:
            value = getattr(model, name)
            values[f"{ENV_PREFIX}{group.upper()}__{name.upper()}"] = _masked(value)
    entries = [entry.summary() for entry in settings.api.key_entries()]
    plain = len(settings.api.keys)  # key_entries lists `keys` first, then `read_only_keys`
    values[f"{ENV_PREFIX}API__KEYS"] = entries[:plain]
    values[f"{ENV_PREFIX}API__READ_ONLY_KEYS"] = entries[plain:]
    return values


def _masked(value: Any) -> Any:
    if isinstance(value, ApiKey):
        return value.summary()
    if isinstance(value, SecretStr):
        return "**********" if value.get_secret_value() else ""
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _masked(v) for k, v in value.items()}
    return value
