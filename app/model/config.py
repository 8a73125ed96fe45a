"""The checkpoint's configuration: the official cde-small-v1/v2 `config.json` fields we use.

The official configs name their backbone (`embedder`: `nomic-ai/nomic-bert-2048` for v1,
`answerdotai/ModernBERT-base` for v2) instead of spelling out its sizes; a `backbone_config`
object in the backbone's own field names, when present, wins (tiny test checkpoints carry one).
The backbone family decides the model family (docs/model.md, "cde-small-v2").
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from app.errors import ModelLoadError

Family = Literal["v1", "v2"]

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
# answerdotai/ModernBERT-base's config.json (the fields ModernBertConfig reads). The hub's
# cde-small-v2 config only names this repo; a local folder without `backbone_config` uses these.
MODERNBERT_BASE: dict[str, Any] = {
    "model_type": "modernbert",
    "vocab_size": 50368,
    "hidden_size": 768,
    "intermediate_size": 1152,
    "num_hidden_layers": 22,
    "num_attention_heads": 12,
    "hidden_activation": "gelu",
    "max_position_embeddings": 8192,
    "norm_eps": 1e-05,
    "norm_bias": False,
    "global_attn_every_n_layers": 3,
    "local_attention": 128,
    "global_rope_theta": 160000.0,
    "local_rope_theta": 10000.0,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "embedding_dropout": 0.0,
    "mlp_bias": False,
    "mlp_dropout": 0.0,
    "classifier_pooling": "mean",
    "pad_token_id": 50283,
    "bos_token_id": 50281,
    "eos_token_id": 50282,
    "cls_token_id": 50281,
    "sep_token_id": 50282,
}
NOMIC_EMBEDDER = "nomic-ai/nomic-bert-2048"
MODERNBERT_EMBEDDER = "answerdotai/ModernBERT-base"
KNOWN_BACKBONES: dict[str, tuple[Family, dict[str, Any]]] = {
    NOMIC_EMBEDDER: ("v1", NOMIC_BERT_2048),
    MODERNBERT_EMBEDDER: ("v2", MODERNBERT_BASE),
}

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

    @property
    def dim(self) -> int:
        return self.n_embd

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


# ModernBERT config keys that are not sizes: what the file was saved with, or choices we make
# ourselves (the attention implementation: see modernbert.py).
_MODERNBERT_IGNORED = {
    "_name_or_path",
    "_attn_implementation",
    "attn_implementation",
    "architectures",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "reference_compile",
}


@dataclass(frozen=True)
class ModernBertBackboneConfig:
    """ModernBERT sizes under ModernBERT's own field names, kept whole: transformers'
    `ModernBertConfig` is built from them (it derives layer types and rotary bases)."""

    values: dict[str, Any] = field(hash=False)

    @property
    def hidden_size(self) -> int:
        return int(self.values["hidden_size"])

    @property
    def dim(self) -> int:
        return self.hidden_size

    @property
    def n_embd(self) -> int:
        """v1's name for the width: callers that read `config.backbone.n_embd` keep working."""
        return self.hidden_size

    @property
    def num_hidden_layers(self) -> int:
        return int(self.values["num_hidden_layers"])

    @property
    def intermediate_size(self) -> int:
        return int(self.values["intermediate_size"])

    @property
    def vocab_size(self) -> int:
        return int(self.values["vocab_size"])

    @property
    def local_attention(self) -> int:
        return int(self.values.get("local_attention", MODERNBERT_BASE["local_attention"]))

    @property
    def global_attn_every_n_layers(self) -> int:
        return int(
            self.values.get(
                "global_attn_every_n_layers", MODERNBERT_BASE["global_attn_every_n_layers"]
            )
        )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModernBertBackboneConfig:
        values = {k: v for k, v in raw.items() if k not in _MODERNBERT_IGNORED}
        missing = [
            k
            for k in (
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "vocab_size",
            )
            if k not in values
        ]
        if missing:
            raise ModelLoadError(f"backbone_config (ModernBERT): missing {', '.join(missing)}")
        if values.get("model_type", "modernbert") != "modernbert":
            raise ModelLoadError(
                f"backbone_config: model_type {values['model_type']!r} is not 'modernbert'"
            )
        if int(values["hidden_size"]) % int(values["num_attention_heads"]):
            raise ModelLoadError(
                f"backbone_config: hidden_size ({values['hidden_size']}) must be divisible by "
                f"num_attention_heads ({values['num_attention_heads']})"
            )
        return cls(values={"model_type": "modernbert", **values})

    def to_dict(self) -> dict[str, Any]:
        return dict(self.values)


def detect_family(raw: dict[str, Any]) -> Family:
    """v1 (nomic-bert backbone) or v2 (ModernBERT) from `config.json`.

    A `backbone_config` with `model_type: modernbert` means v2; otherwise the `embedder` name
    decides; a `backbone_config` without a model type under an unknown embedder is nomic-bert
    sizes (tiny v1 checkpoints)."""
    backbone = raw.get("backbone_config") or {}
    if backbone.get("model_type") == "modernbert":
        return "v2"
    embedder = raw.get("embedder", NOMIC_EMBEDDER)
    if embedder in KNOWN_BACKBONES and not backbone.get("model_type"):
        return KNOWN_BACKBONES[embedder][0]
    if backbone:
        return "v1"
    raise ModelLoadError(
        f"config.json: embedder {embedder!r} is not supported; known: "
        f"{sorted(KNOWN_BACKBONES)} (or give a `backbone_config` object)"
    )


@dataclass(frozen=True)
class CdeConfig:
    """What the two-stage forward needs from `config.json`."""

    backbone: BackboneConfig | ModernBertBackboneConfig
    transductive_corpus_size: int = 512
    transductive_tokens_per_document: int = 1
    disable_transductive_rotary_embedding: bool = True
    max_seq_length: int = 512
    n_soft_prompt: int = N_SOFT_PROMPT

    @property
    def prefix_length(self) -> int:
        """Positions before the text in stage 2: dataset embeddings + soft prompt."""
        return self.transductive_corpus_size + self.n_soft_prompt

    @property
    def family(self) -> Family:
        return "v2" if isinstance(self.backbone, ModernBertBackboneConfig) else "v1"

    @property
    def dim(self) -> int:
        """Width of every vector the model produces (dataset embeddings and outputs)."""
        return self.backbone.dim

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], *, embedder_config: dict[str, Any] | None = None
    ) -> CdeConfig:
        """`embedder_config`: the `embedder` repo's own config.json, used for the backbone when
        `raw` has no `backbone_config` (the hub's v2 layout); else the built-in table."""
        family = detect_family(raw)
        embedder = raw.get("embedder", NOMIC_EMBEDDER)
        backbone_raw = raw.get("backbone_config") or embedder_config
        if backbone_raw is None:
            if embedder not in KNOWN_BACKBONES:
                raise ModelLoadError(
                    f"config.json: embedder {embedder!r} is not supported; known: "
                    f"{sorted(KNOWN_BACKBONES)} (or give a `backbone_config` object)"
                )
            backbone_raw = KNOWN_BACKBONES[embedder][1]
        backbone: BackboneConfig | ModernBertBackboneConfig
        if family == "v2":
            backbone = ModernBertBackboneConfig.from_dict(backbone_raw)
        else:
            backbone = BackboneConfig.from_dict(backbone_raw)
        tokens_per_doc = int(raw.get("transductive_tokens_per_document", 1))
        if tokens_per_doc != 1:
            raise ModelLoadError(
                "config.json: transductive_tokens_per_document must be 1 "
                f"(cde-small-v1/v2), got {tokens_per_doc}"
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
        """The official fields (without `backbone_config`: save_checkpoint adds it)."""
        if self.family == "v2":
            return self._v2_dict()
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

    def _v2_dict(self) -> dict[str, Any]:
        """The official cde-small-v2 fields (jxm/cde-small-v2 `config.json`)."""
        return {
            "architecture": "transductive",
            "architectures": ["ContextualDocumentEmbeddingTransformer"],
            "autoregressive_backbone": False,
            "disable_dropout": True,
            # True in the official file, but it acts on nomic backbones only: v2 rotates
            # every position (docs/model.md, "cde-small-v2": Stage 2).
            "disable_transductive_rotary_embedding": self.disable_transductive_rotary_embedding,
            "embedder": MODERNBERT_EMBEDDER,
            "embedding_output_dim": None,
            "limit_layers": None,
            "limit_layers_first_stage": None,
            "logit_scale": 50.0,
            "max_seq_length": self.max_seq_length,
            "pool_ignore_contextual_tokens": True,
            "pool_ignore_instruction_tokens": True,
            "pooling_strategy": "mean",
            "torch_dtype": "float32",
            "transductive_corpus_size": self.transductive_corpus_size,
            "transductive_sequence_dropout_prob": 0.0,
            "transductive_tie_token_embeddings": False,
            "transductive_tokens_per_document": self.transductive_tokens_per_document,
        }
