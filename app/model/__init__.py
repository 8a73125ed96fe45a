"""cde-small-v1 (pure PyTorch) and cde-small-v2 (on transformers' ModernBertModel): no I/O
beyond reading a checkpoint, no settings, no services."""

from app.model.config import BackboneConfig, CdeConfig, Family, ModernBertBackboneConfig
from app.model.embedder import DOCUMENT_PREFIX, QUERY_PREFIX, CdeEmbedder
from app.model.modernbert import V2Head
from app.model.values import Embeddings, Progress, sample_context, valid_unicode

__all__ = [
    "DOCUMENT_PREFIX",
    "QUERY_PREFIX",
    "BackboneConfig",
    "CdeConfig",
    "CdeEmbedder",
    "Embeddings",
    "Family",
    "ModernBertBackboneConfig",
    "Progress",
    "V2Head",
    "sample_context",
    "valid_unicode",
]
