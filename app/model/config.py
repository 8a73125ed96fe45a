"""The checkpoint's configuration: the official cde-small-v1 `config.json` fields we use.

The official config names its backbone (`embedder: nomic-ai/nomic-bert-2048`) instead of
spelling out its sizes; a `backbone_config` object with nomic-bert's own field names, when
present, wins (tiny test checkpoints carry one).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from app.errors import ModelLoadError

# nomic-ai/nomic-bert-2048, whose values are fixed (see docs: "Backbone").
NOMIC_BERT_2048: dict[str, Any] = {
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "n_inner": 3072,
    "vocab_size": 30528,
    "type_vocab_size": 2,
    "layer_norm_epsilon": 1e-12,
    "rotary_emb_base": 1000.0,
    "rotary_emb_fraction": 1.0,
    "rotary_emb_interleaved": False,
}
KNOWN_BACKBONES = {"nomic-ai/nomic-bert-2048": NOMIC_BERT_2048}

# Soft-prompt tokens appended after the dataset embeddings (the authors' `n_soft_prompt`).
N_SOFT_PROMPT = 8


@dataclass(frozen=True)
class BackboneConfig:
    """nomic-bert sizes, under nomic-bert's own field names."""

    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int = 3072
    vocab_size: int = 30528
    type_vocab_size: int = 2
    layer_norm_epsilon: float = 1e-12
    rotary_emb_base: float = 1000.0
    rotary_emb_fraction: float = 1.0
    rotary_emb_interleaved: bool = False

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BackboneConfig:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in names and v is not None}
        cfg = cls(**values)
        if cfg.n_embd % cfg.n_head:
            raise ModelLoadError(
                f"backbone_config: n_embd ({cfg.n_embd}) must be divisible by n_head ({cfg.n_head})"
            )
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class CdeConfig:
    """What the two-stage forward needs from `config.json`."""

    backbone: BackboneConfig
    transductive_corpus_size: int = 512
    transductive_tokens_per_document: int = 1
    disable_transductive_rotary_embedding: bool = True
    max_seq_length: int = 512
    n_soft_prompt: int = N_SOFT_PROMPT

    @property
    def prefix_length(self) -> int:
        """Positions before the text in stage 2: dataset embeddings + soft prompt."""
        return self.transductive_corpus_size + self.n_soft_prompt

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CdeConfig:
        if "backbone_config" in raw and raw["backbone_config"] is not None:
            backbone = BackboneConfig.from_dict(raw["backbone_config"])
        else:
            embedder = raw.get("embedder", "nomic-ai/nomic-bert-2048")
            if embedder not in KNOWN_BACKBONES:
                raise ModelLoadError(
                    f"config.json: embedder {embedder!r} is not supported; known: "
                    f"{sorted(KNOWN_BACKBONES)} (or give a `backbone_config` object)"
                )
            backbone = BackboneConfig.from_dict(KNOWN_BACKBONES[embedder])
        tokens_per_doc = int(raw.get("transductive_tokens_per_document", 1))
        if tokens_per_doc != 1:
            raise ModelLoadError(
                "config.json: transductive_tokens_per_document must be 1 "
                f"(cde-small-v1), got {tokens_per_doc}"
            )
        return cls(
            backbone=backbone,
            transductive_corpus_size=int(raw.get("transductive_corpus_size", 512)),
            transductive_tokens_per_document=tokens_per_doc,
            disable_transductive_rotary_embedding=bool(
                raw.get("disable_transductive_rotary_embedding", True)
            ),
            max_seq_length=int(raw.get("max_seq_length", 512)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The official fields, plus `backbone_config` for the sizes."""
        return {
            "architecture": "transductive",
            "architectures": ["DatasetTransformer"],
            "biencoder_pooling_strategy": "mean",
            "disable_dropout": True,
            "disable_transductive_rotary_embedding": self.disable_transductive_rotary_embedding,
            "embedder": "nomic-ai/nomic-bert-2048",
            "embedding_output_dim": None,
            "limit_layers": None,
            "limit_layers_first_stage": None,
            "logit_scale": 50.0,
            "max_seq_length": self.max_seq_length,
            "torch_dtype": "float32",
            "transductive_corpus_size": self.transductive_corpus_size,
            "transductive_sequence_dropout_prob": 0.0,
            "transductive_tie_token_embeddings": False,
            "transductive_tokens_per_document": self.transductive_tokens_per_document,
        }
