"""Random cde-small-v1/v2 checkpoints in the official layout, for tests and benchmarks offline.

Weights are scaled so the model stays sensitive to its inputs: every Linear draws from
N(0, 1/fan_in), biases are small, embeddings unit-variance (with N(0, 0.02) everywhere the
biases dominate and every output looks alike — docs/model.md, "How the forward is checked").
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.model.checkpoint import new_model, save_checkpoint
from app.model.config import (
    MODERNBERT_BASE,
    NOMIC_BERT_2048,
    BackboneConfig,
    CdeConfig,
    Family,
    ModernBertBackboneConfig,
)
from app.model.generic import generic_texts

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# ModernBERT's special tokens, in its order; like ModernBERT's they come after the BPE
# vocabulary (ids 50280-50284 there), so no id can be taken for granted.
MODERNBERT_SPECIAL_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]

SIZES: dict[str, tuple[BackboneConfig, int]] = {
    # hidden 64, 2 layers, 4 heads, context 16: fast enough for every test
    "tiny": (
        BackboneConfig(n_embd=64, n_layer=2, n_head=4, n_inner=256, vocab_size=2048),
        16,
    ),
    # hidden 384, 6 layers, context 128: a mid-size model for CPU serving benchmarks
    "mid": (
        BackboneConfig(n_embd=384, n_layer=6, n_head=6, n_inner=1536, vocab_size=8192),
        128,
    ),
    # the real architecture (281M parameters) for benchmarks
    "full": (BackboneConfig.from_dict(NOMIC_BERT_2048), 512),
}
# v2: ModernBERT sizes (the special token ids are filled in from the tokenizer).
V2_SIZES: dict[str, tuple[dict[str, Any], int]] = {
    # hidden 64, 4 layers (0 and 3 global, 1 and 2 local with a ±8 window), context 16
    "tiny": (
        {
            **MODERNBERT_BASE,
            "vocab_size": 2048,
            "hidden_size": 64,
            "intermediate_size": 96,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "local_attention": 16,
        },
        16,
    ),
    # the real architecture (305.7M parameters) for benchmarks
    "full": (dict(MODERNBERT_BASE), 512),
}


def init_weights(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            fan_in = module.weight.shape[1]
            with torch.no_grad():
                module.weight.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=gen)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.02, generator=gen)
        elif isinstance(module, nn.Embedding):
            with torch.no_grad():
                module.weight.normal_(0.0, 1.0, generator=gen)
        elif isinstance(module, nn.LayerNorm):
            with torch.no_grad():
                module.weight.normal_(1.0, 0.02, generator=gen)
                if module.bias is not None:  # ModernBERT's norms have none
                    module.bias.zero_()


def write_tokenizer(folder: Path, vocab_size: int, corpus: Iterable[str]) -> int:
    """A bert-style lower-casing WordPiece tokenizer trained on `corpus`, padded with
    `[unusedN]` entries to exactly `vocab_size`. Writes vocab.txt, tokenizer.json and
    tokenizer_config.json; returns the vocabulary size."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    alphabet = list(string.ascii_lowercase + string.digits + string.punctuation)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=alphabet,
        limit_alphabet=1000,
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    # every continuation piece exists, so no word of ASCII text becomes [UNK]
    have = set(tokens)
    tokens += [f"##{c}" for c in alphabet if f"##{c}" not in have]
    tokens += [f"[unused{i}]" for i in range(vocab_size - len(tokens))]
    tokens = tokens[:vocab_size]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    final = Tokenizer(models.WordPiece.from_file(str(folder / "vocab.txt"), unk_token="[UNK]"))
    final.normalizer = tok.normalizer
    final.pre_tokenizer = tok.pre_tokenizer
    ids = {t: i for i, t in enumerate(tokens)}
    final.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    final.decoder = decoders.WordPiece()
    for special in SPECIAL_TOKENS:
        final.add_special_tokens([special])
    final.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "model_max_length": 512,
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "mask_token": "[MASK]",
        "strip_accents": None,
        "tokenize_chinese_chars": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return len(tokens)


def write_bpe_tokenizer(folder: Path, vocab_size: int, corpus: Iterable[str]) -> dict[str, int]:
    """A ModernBERT-style byte-level BPE tokenizer trained on `corpus` ([CLS] $A [SEP], case
    kept), with at most `vocab_size` entries and the special tokens after the BPE vocabulary.
    Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json; returns the
    special tokens' ids by name."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(MODERNBERT_SPECIAL_TOKENS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    tok.add_special_tokens(MODERNBERT_SPECIAL_TOKENS)
    ids: dict[str, int] = {}
    for token in MODERNBERT_SPECIAL_TOKENS:
        found = tok.token_to_id(token)
        assert found is not None, token
        ids[token] = found
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    names = {
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "mask_token": "[MASK]",
        "unk_token": "[UNK]",
    }
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 8192, **names}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(names, indent=2) + "\n")
    return ids


def v2_config(size: str, folder: Path, texts: list[str]) -> CdeConfig:
    """Write the tokenizer of a random v2 checkpoint; its config, special ids included."""
    values, corpus_size = V2_SIZES[size]
    vocab_size = int(values["vocab_size"])
    # ModernBERT-base: 50,280 BPE entries + 5 special tokens, padded to a multiple of 64
    ids = write_bpe_tokenizer(folder, min(vocab_size, 50_285), texts)
    special = {
        "pad_token_id": ids["[PAD]"],
        "cls_token_id": ids["[CLS]"],
        "bos_token_id": ids["[CLS]"],
        "sep_token_id": ids["[SEP]"],
        "eos_token_id": ids["[SEP]"],
    }
    backbone = ModernBertBackboneConfig.from_dict({**values, **special})
    return CdeConfig(backbone=backbone, transductive_corpus_size=corpus_size)


def make_checkpoint(
    folder: str | Path,
    *,
    size: str = "tiny",
    seed: int = 0,
    corpus: Iterable[str] | None = None,
    family: Family = "v1",
) -> Path:
    """Write a random checkpoint of `family` ('v1' or 'v2') and `size` ('tiny', 'mid' (v1 only) or 'full') to
    `folder`, tokenizer included (v2: `backbone_config` too, since its ids are not
    ModernBERT-base's).

    `corpus` trains the tokenizer (a realistic one gives realistic token counts);
    default: the built-in generic texts."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    if family not in ("v1", "v2"):
        raise ValueError(f"family must be 'v1' or 'v2', got {family!r}")
    if family == "v2" and size not in V2_SIZES:
        raise ValueError(f"v2 sizes are {sorted(V2_SIZES)}, got {size!r}")
    out = Path(folder)
    texts = list(corpus) if corpus is not None else generic_texts(2000, seed=seed)
    if family == "v2":
        cfg = v2_config(size, out, texts)
        torch.manual_seed(seed)
        # The head changes no weight; "hub" needs no tokenizer to build.
        model = new_model(cfg, v2_head="hub")
        init_weights(model, seed)
        save_checkpoint(model, cfg, out)
        return out
    backbone, corpus_size = SIZES[size]
    cfg = CdeConfig(backbone=backbone, transductive_corpus_size=corpus_size)
    # 30522 real entries padded to 30528, as bert-base-uncased inside nomic-bert
    real_vocab = backbone.vocab_size - (6 if size == "full" else 0)
    write_tokenizer(out, real_vocab, texts)
    torch.manual_seed(seed)
    model = new_model(cfg)
    init_weights(model, seed)
    save_checkpoint(model, cfg, out)
    return out
