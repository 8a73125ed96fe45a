"""cde-small-v1 in pure PyTorch: no I/O beyond reading a checkpoint, no settings, no services."""

from app.model.config import BackboneConfig, CdeConfig
from app.model.embedder import (
    DOCUMENT_PREFIX,
    QUERY_PREFIX,
    CdeEmbedder,
    Embeddings,
    sample_context,
)

__all__ = [
    "DOCUMENT_PREFIX",
    "QUERY_PREFIX",
    "BackboneConfig",
    "CdeConfig",
    "CdeEmbedder",
    "Embeddings",
    "sample_context",
]
