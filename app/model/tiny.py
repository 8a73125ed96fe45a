"""Random cde-small-v1 checkpoints in the official layout, for tests and benchmarks offline.

Weights are scaled so the model stays sensitive to its inputs: every Linear draws from
N(0, 1/fan_in), biases are small, embeddings unit-variance (with N(0, 0.02) everywhere the
biases dominate and every output looks alike — docs/cde-model.md, "Known pitfalls").
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from app.model.checkpoint import save_checkpoint
from app.model.config import NOMIC_BERT_2048, BackboneConfig, CdeConfig
from app.model.generic import generic_texts
from app.model.network import DatasetTransformer

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

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
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=alphabet,
        limit_alphabet=1000, show_progress=False,
    )  # fmt: skip
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
        "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
        "unk_token": "[UNK]", "mask_token": "[MASK]",
        "strip_accents": None, "tokenize_chinese_chars": True,
    }  # fmt: skip
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return len(tokens)


def make_checkpoint(
    folder: str | Path,
    *,
    size: str = "tiny",
    seed: int = 0,
    corpus: Iterable[str] | None = None,
) -> Path:
    """Write a random checkpoint of `size` ('tiny', 'mid' or 'full') to `folder`.

    `corpus` trains the tokenizer (a realistic one gives realistic token counts);
    default: the built-in generic texts."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    backbone, corpus_size = SIZES[size]
    cfg = CdeConfig(backbone=backbone, transductive_corpus_size=corpus_size)
    out = Path(folder)
    texts = list(corpus) if corpus is not None else generic_texts(2000, seed=seed)
    # 30522 real entries padded to 30528, as bert-base-uncased inside nomic-bert
    real_vocab = backbone.vocab_size - (6 if size == "full" else 0)
    write_tokenizer(out, real_vocab, texts)
    torch.manual_seed(seed)
    model = DatasetTransformer(cfg)
    init_weights(model, seed)
    save_checkpoint(model, cfg, out)
    return out
