"""Settings: one root class, nested groups, env prefix `CDEQ_`, `__` for nesting.

Nothing reads the environment at import time: entry points call `Settings()` (or
`load_settings()`) once and pass the values down as plain arguments.
Example: `CDEQ_QDRANT__URL=http://qdrant:6333`, `CDEQ_API__KEYS='["k1","k2"]'`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
        1800, ge=1, description="a context build holds its lock this long at most"
    )
    job_ttl_s: int = Field(
        7 * 24 * 3600, ge=60, description="how long job records are kept in Redis"
    )

    @model_validator(mode="after")
    def _limits_ordered(self) -> IngestSettings:
        if self.task_time_limit_s <= self.task_soft_time_limit_s:
            raise ValueError("task_time_limit_s must exceed task_soft_time_limit_s")
        return self


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
    model_name: str = Field("cde-small-v1", description="the `model` name the API reports")


class ServeSettings(BaseModel):
    """The API process's model server: one batching queue in front of the model."""

    batching: bool = Field(
        True,
        description="pack concurrent requests into shared forwards; false: each request runs "
        "its own forward in its own thread (the per-request path)",
    )
    max_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="how long a forward waits for more requests to pack"
    )
    max_batch: int = Field(256, ge=1, le=65_536, description="texts per packed forward")
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
        env_prefix="CDEQ_", env_nested_delimiter="__", extra="ignore", protected_namespaces=()
    )

    model: ModelSettings = Field(default_factory=ModelSettings)  # type: ignore[arg-type]
    redis: RedisSettings = Field(default_factory=RedisSettings)  # type: ignore[arg-type]
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings)  # type: ignore[arg-type]
    ingest: IngestSettings = Field(default_factory=IngestSettings)  # type: ignore[arg-type]
    api: ApiSettings = Field(default_factory=ApiSettings)  # type: ignore[arg-type]
    serve: ServeSettings = Field(default_factory=ServeSettings)  # type: ignore[arg-type]
    log: LogSettings = Field(default_factory=LogSettings)  # type: ignore[arg-type]


def load_settings(**overrides: object) -> Settings:
    """Read the environment now (never at import) and apply explicit overrides."""
    return Settings(**overrides)  # type: ignore[arg-type]
