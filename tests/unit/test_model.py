"""The model core: golden vectors, strict loading, the embedding API's rules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from app.errors import InvalidInput, ModelLoadError
from app.model import DOCUMENT_PREFIX, QUERY_PREFIX, CdeConfig, CdeEmbedder, sample_context
from app.model.generic import generic_texts
from app.model.network import apply_rotary, rotary_cos_sin
from tests.conftest import GOLDEN

CONTEXT = generic_texts(40, seed=3)
OTHER_CONTEXT = generic_texts(40, seed=4)
DOCS = [
    "The court ruled that the new tax law applies to every company in the state.",
    "x",
    "Energy from the sun reaches the earth in about eight minutes.",
    "word " * 700,  # over 512 tokens
    "Ünïcödé façade — naïve café 東京",
    "A short one.",
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.fixture(scope="module")
def context(embedder: CdeEmbedder) -> np.ndarray:
    return embedder.embed_context(CONTEXT)


# ---- golden vectors from an independent implementation ------------------------------------
def test_golden_vectors_reproduced_in_fp32() -> None:
    inputs = json.loads((GOLDEN / "inputs.json").read_text())
    expected = {
        k: np.array(v) for k, v in json.loads((GOLDEN / "expected.json").read_text()).items()
    }
    model = CdeEmbedder.from_pretrained(GOLDEN / "checkpoint", device="cpu", dtype="float32")
    assert len(model.tokenizer) == 2048
    dataset = model.embed_context(inputs["context"])
    np.testing.assert_allclose(dataset, expected["dataset_embeddings"], atol=1e-4)
    for name, got in (
        ("documents", model.embed_documents(inputs["documents"], dataset).vectors),
        ("queries", model.embed_queries(inputs["queries"], dataset).vectors),
    ):
        assert cosines(got, expected[name]).min() >= 0.99999, name
        assert np.abs(got - expected[name]).max() <= 1e-4, name


# ---- independent numerical facts ------------------------------------------------------------
def test_rotary_base_1000_matches_hand_computation() -> None:
    # head dim 4 → inverse frequencies 1 and 1000^(-1/2); position 1 rotates (x0, x2) by 1 rad
    # and (x1, x3) by 0.0316 rad (halves are paired, GPT-NeoX style).
    cos, sin = rotary_cos_sin(torch.tensor([0, 1]), rotary_dim=4, base=1000.0)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).expand(1, 1, 2, 4)  # (B, nh, T, hd)
    out = apply_rotary(x, cos, sin, interleaved=False)[0, 0]
    a, b = 1.0, 1000**-0.5
    expected_pos1 = [
        1 * math.cos(a) - 3 * math.sin(a),
        2 * math.cos(b) - 4 * math.sin(b),
        1 * math.sin(a) + 3 * math.cos(a),
        2 * math.sin(b) + 4 * math.cos(b),
    ]
    torch.testing.assert_close(out[0], torch.tensor([1.0, 2.0, 3.0, 4.0]))  # position 0: identity
    torch.testing.assert_close(out[1], torch.tensor(expected_pos1), atol=1e-6, rtol=0)


def test_unrotated_positions_are_identity() -> None:
    positions = torch.arange(6)
    cos, sin = rotary_cos_sin(positions, 4, 1000.0, unrotated=positions < 4)
    assert torch.all(cos[:4] == 1) and torch.all(sin[:4] == 0)
    assert torch.all(sin[4:] != 0)


def test_context_positions_carry_no_order(embedder: CdeEmbedder, context: np.ndarray) -> None:
    # Unrotated dataset positions have no position information, so permuting the dataset
    # embeddings cannot change a document's vector (it would if they were rotated).
    permuted = context[np.random.default_rng(0).permutation(len(context))]
    a = embedder.embed_documents(DOCS[:3], context).vectors
    b = embedder.embed_documents(DOCS[:3], permuted).vectors
    assert cosines(a, b).min() >= 0.99999


# ---- loading -----------------------------------------------------------------------------------
def test_missing_and_unexpected_keys_are_all_named(model_copy: Path) -> None:
    state = load_file(model_copy / "model.safetensors")
    del state["first_stage_model.mlp.0.bias"]
    del state["second_stage_model.backbone.encoder.layers.1.norm2.weight"]
    state["second_stage_model.pooler.weight"] = torch.zeros(2)
    save_file(state, model_copy / "model.safetensors")
    with pytest.raises(ModelLoadError) as err:
        CdeEmbedder.from_pretrained(model_copy, device="cpu")
    msg = str(err.value)
    assert "first_stage_model.mlp.0.bias" in msg
    assert "second_stage_model.backbone.encoder.layers.1.norm2.weight" in msg
    assert "unexpected keys (1): second_stage_model.pooler.weight" in msg


def test_shape_mismatch_is_named(model_copy: Path) -> None:
    state = load_file(model_copy / "model.safetensors")
    state["second_stage_model.output_projection.2.weight"] = torch.zeros(64, 32)
    save_file(state, model_copy / "model.safetensors")
    with pytest.raises(
        ModelLoadError,
        match=r"output_projection\.2\.weight \(checkpoint \(64, 32\), model \(64, 64\)\)",
    ):
        CdeEmbedder.from_pretrained(model_copy, device="cpu")


def test_pytorch_bin_loads_like_safetensors(
    model_copy: Path, embedder: CdeEmbedder, context: np.ndarray
) -> None:
    state = load_file(model_copy / "model.safetensors")
    (model_copy / "model.safetensors").unlink()
    torch.save(state, model_copy / "pytorch_model.bin")
    other = CdeEmbedder.from_pretrained(model_copy, device="cpu")
    np.testing.assert_array_equal(other.embed_context(CONTEXT), context)


def test_missing_files_and_bad_paths(model_copy: Path, tmp_path: Path) -> None:
    (model_copy / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights"):
        CdeEmbedder.from_pretrained(model_copy)
    with pytest.raises(ModelLoadError, match=r"config\.json is missing"):
        CdeEmbedder.from_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="no such folder"):
        CdeEmbedder.from_pretrained(tmp_path / "nope" / "deeper")


def test_hub_id_without_network_says_how_to_use_a_local_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network here; offline mode fails at once
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match="local folder") as err:
        CdeEmbedder.from_pretrained("someone/not-cached-model")
    assert "--model DIR" in str(err.value)


def test_backbone_config_wins_and_official_config_means_nomic_bert() -> None:
    official = json.loads((GOLDEN / "checkpoint" / "config.json").read_text())
    assert CdeConfig.from_dict(official).backbone.n_embd == 64
    del official["backbone_config"]
    full = CdeConfig.from_dict(official).backbone
    assert (full.n_embd, full.n_layer, full.n_head, full.vocab_size) == (768, 12, 12, 30528)
    assert full.rotary_emb_base == 1000
    official["embedder"] = "bert-base-uncased"
    with pytest.raises(ModelLoadError, match="embedder 'bert-base-uncased' is not supported"):
        CdeConfig.from_dict(official)


def test_tokenizer_has_the_checkpoints_vocabulary(embedder: CdeEmbedder) -> None:
    assert len(embedder.tokenizer) == 2048
    assert embedder.tokenizer.tokenize("Hello")  # not all [UNK]
    assert "[UNK]" not in embedder.tokenizer.tokenize("the quick brown fox")


# ---- the embedding API ---------------------------------------------------------------------------
def test_shapes_dtype_and_unit_norm(embedder: CdeEmbedder, context: np.ndarray) -> None:
    assert context.shape == (embedder.context_size, embedder.dim) == (16, 64)
    out = embedder.embed_documents(DOCS, context)
    assert out.vectors.shape == (len(DOCS), 64) and out.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)
    assert np.asarray(out).shape == out.shape == (len(DOCS), 64)
    empty = embedder.embed_queries([], context)
    assert empty.vectors.shape == (0, 64)


def test_deterministic(embedder: CdeEmbedder, context: np.ndarray) -> None:
    np.testing.assert_array_equal(embedder.embed_context(CONTEXT), context)
    a = embedder.embed_documents(DOCS, context).vectors
    np.testing.assert_array_equal(a, embedder.embed_documents(DOCS, context).vectors)


def test_batch_composition_never_changes_a_result(
    tiny_model_dir: Path, context: np.ndarray
) -> None:
    # Smallest legal budget: one text per batch, so every text is embedded alone…
    alone = CdeEmbedder.from_pretrained(tiny_model_dir, device="cpu", token_budget=16 + 8 + 512)
    assert len(alone.plan_batches([500] * 3, extra=24)) == 3
    # …against a budget that packs mixed lengths (with padding) together.
    packed = CdeEmbedder.from_pretrained(tiny_model_dir, device="cpu", token_budget=200_000)
    texts = DOCS + generic_texts(30, seed=9, min_words=1, max_words=200)
    a = alone.embed_documents(texts, context).vectors
    b = packed.embed_documents(texts, context).vectors
    assert cosines(a, b).min() >= 0.99999
    # the same texts in another order come back in the caller's order
    order = np.random.default_rng(1).permutation(len(texts))
    c = packed.embed_documents([texts[i] for i in order], context).vectors
    assert cosines(c, b[order]).min() >= 0.99999


def test_plan_batches_respects_the_token_budget(embedder: CdeEmbedder) -> None:
    lengths = [int(x) for x in np.random.default_rng(2).integers(3, 513, size=300)]
    batches = embedder.plan_batches(lengths, extra=24)
    assert sorted(i for b in batches for i in b) == list(range(300))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * (24 + longest) <= embedder.token_budget


def test_context_sensitivity(embedder: CdeEmbedder, context: np.ndarray) -> None:
    other = embedder.embed_context(OTHER_CONTEXT)
    a = embedder.embed_documents(DOCS[:3], context).vectors
    b = embedder.embed_documents(DOCS[:3], other).vectors
    assert not np.allclose(a, b, atol=1e-4)
    assert cosines(a, b).max() < 0.99999
    np.testing.assert_array_equal(a, embedder.embed_documents(DOCS[:3], context.copy()).vectors)


def test_prefixes_applied_exactly_once(embedder: CdeEmbedder, context: np.ndarray) -> None:
    ids, _ = embedder.tokenize(["hello there"], DOCUMENT_PREFIX)
    decoded = embedder.tokenizer.decode(ids[0]).replace(" ", "")
    assert decoded == "[CLS]search_document:hellothere[SEP]"
    # The library adds the prefix: a caller adding it too gets a different (double) input.
    plain = embedder.embed_documents(["hello there"], context).vectors
    doubled = embedder.embed_documents([DOCUMENT_PREFIX + "hello there"], context).vectors
    assert cosines(plain, doubled)[0] < 0.99999
    # Manual forward on exactly one prefix reproduces the library's vector.
    with torch.inference_mode():
        stage2 = embedder.model.second_stage_model
        prefix = stage2.prefix(torch.from_numpy(context))
        raw = stage2(torch.tensor(ids), torch.ones(1, len(ids[0]), dtype=torch.long), prefix)
    manual = torch.nn.functional.normalize(raw, dim=-1).numpy()
    assert cosines(plain, manual)[0] >= 0.99999
    # queries use their own prefix
    q_ids, _ = embedder.tokenize(["hello there"], QUERY_PREFIX)
    assert (
        embedder.tokenizer.decode(q_ids[0]).replace(" ", "") == "[CLS]search_query:hellothere[SEP]"
    )
    assert cosines(plain, embedder.embed_queries(["hello there"], context).vectors)[0] < 0.99999


def test_truncation_is_reported(embedder: CdeEmbedder, context: np.ndarray) -> None:
    embedder.tokenizer("the wrapper resets its engine's truncation; ours is a private copy")
    out = embedder.embed_documents(DOCS, context)
    assert out.truncated == [False, False, False, True, False, False]
    assert out.token_counts[3] == 512
    assert all(n < 512 for i, n in enumerate(out.token_counts) if i != 3)


def test_sample_context_rules() -> None:
    corpus = [f"doc {i}" for i in range(10)]
    assert sample_context(corpus, 10, seed=0) == corpus
    larger = sample_context(list(range(100)), 10, seed=5)
    assert len(larger) == len(set(larger)) == 10
    assert larger == sample_context(list(range(100)), 10, seed=5)
    assert larger != sample_context(list(range(100)), 10, seed=6)
    smaller = sample_context(corpus, 25, seed=1)
    counts = {c: smaller.count(c) for c in corpus}
    assert len(smaller) == 25 and set(counts.values()) <= {2, 3} and sum(counts.values()) == 25
    with pytest.raises(InvalidInput, match="empty"):
        sample_context([], 5, seed=0)


def test_short_corpus_is_sampled_up_to_the_context_size(embedder: CdeEmbedder) -> None:
    out = embedder.embed_context(CONTEXT[:5])
    assert out.shape == (16, 64)


def test_degenerate_context_refused(embedder: CdeEmbedder) -> None:
    with pytest.raises(InvalidInput, match="degenerate"):
        embedder.embed_context(["the same text"] * 20)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["ok", ""], r"texts\[1\]: is empty"),
        (["ok", "ok", "   \n\t"], r"texts\[2\]: is empty or whitespace-only"),
        (["ok", 3], r"texts\[1\]: must be a string, got int"),
        ("a single string", "must be a list of strings, got str"),
        ([None, "ok", ""], r"2 problems: texts\[0\]: must be a string, got NoneType; texts\[2\]"),
    ],
)
def test_bad_texts(embedder: CdeEmbedder, context: np.ndarray, texts: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        embedder.embed_documents(texts, context)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):  # InvalidInput is a ValueError
        embedder.embed_queries(texts, context)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        (np.zeros((15, 64), np.float32), r"shape \(16, 64\).*got \(15, 64\)"),
        (np.zeros((16, 32), np.float32), r"got \(16, 32\)"),
        (np.zeros((16, 64), np.int64), "floating point, got dtype int64"),
        (np.full((16, 64), np.nan, np.float32), "NaN"),
        ([[0.0] * 64] * 16, "numpy array or torch tensor"),
        (torch.zeros(16, 64, dtype=torch.int32), "floating point"),
    ],
)
def test_bad_dataset_embeddings(embedder: CdeEmbedder, dataset: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        embedder.embed_documents(["ok"], dataset)


def test_token_budget_below_one_sequence_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(InvalidInput, match="token_budget must be at least 536"):
        CdeEmbedder.from_pretrained(tiny_model_dir, device="cpu", token_budget=100)


def test_bfloat16_on_cpu_stays_close_to_fp32(
    tiny_model_dir: Path, embedder: CdeEmbedder, context: np.ndarray
) -> None:
    half = CdeEmbedder.from_pretrained(tiny_model_dir, device="cpu", dtype="bfloat16")
    a = embedder.embed_documents(DOCS[:3], context).vectors
    b = half.embed_documents(DOCS[:3], half.embed_context(CONTEXT)).vectors
    assert b.dtype == np.float32
    assert cosines(a, b).min() > 0.99


def test_fused_sdpa_path_matches_per_sequence_attention(
    embedder: CdeEmbedder, context: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CUDA runs PyTorch's fused SDPA with a key padding mask; CPU runs attention per sequence
    # over real tokens. Both must give the same vectors (the GPU path is checked here on CPU).
    from app.model import network

    texts = DOCS + generic_texts(12, seed=13, min_words=1, max_words=150)
    per_sequence = embedder.embed_documents(texts, context).vectors
    per_sequence_ctx = embedder.embed_context(OTHER_CONTEXT)
    monkeypatch.setattr(network, "ATTENTION_BY_SEQUENCE_ON_CPU", False)
    fused = embedder.embed_documents(texts, context).vectors
    assert cosines(per_sequence, fused).min() >= 0.99999
    np.testing.assert_allclose(embedder.embed_context(OTHER_CONTEXT), per_sequence_ctx, atol=1e-4)
