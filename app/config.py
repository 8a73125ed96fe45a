"""Settings: one root class, nested groups, env prefix `CDEQ_`, `__` for nesting.

Nothing reads the environment at import time: entry points call `load_settings()` once and
pass the values down as plain arguments. Values come from the environment, then from a `.env`
file in the current directory (the environment wins).
Example: `CDEQ_QDRANT__URL=http://qdrant:6333`, `CDEQ_API__KEYS='["k1","k2"]'`.

`load_settings` also turns every operator mistake into a clear message: an invalid value
raises one `InvalidInput` with a line per variable, and an unknown `CDEQ_*` name (a typo such
as `CDEQ_QDRANT__ULR`) is logged as a warning naming the closest valid one.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

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
        "(hub remote code), see the README; ignored for v1",
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
    max_text_chars: int = Field(100_000, ge=1, description="longest accepted document text")
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


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    keys: list[SecretStr] = Field(default_factory=list, description="read-write API keys")
    read_only_keys: list[SecretStr] = Field(
        default_factory=list, description="keys for read routes only"
    )
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
        loc = [str(part) for part in error["loc"]]
        name = ENV_PREFIX + "__".join(part.upper() for part in loc[:2])
        if len(loc) > 2:  # an item of a list setting
            name += "[" + "][".join(loc[2:]) + "]"
        message = str(error["msg"]).removeprefix("Value error, ")
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
    """Every setting by its variable name, as JSON values; secrets masked, unset ones None."""
    values: dict[str, Any] = {}
    for group in Settings.model_fields:
        model = getattr(settings, group)
        for name in type(model).model_fields:
            value = getattr(model, name)
            values[f"{ENV_PREFIX}{group.upper()}__{name.upper()}"] = _masked(value)
    return values


def _masked(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "**********" if value.get_secret_value() else ""
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _masked(v) for k, v in value.items()}
    return value
