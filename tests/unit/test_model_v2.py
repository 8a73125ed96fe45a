"""cde-small-v2: golden vectors, both heads, loading rules, and the v1 API on a v2 model."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from app.errors import InvalidInput, ModelLoadError
from app.model import DOCUMENT_PREFIX, QUERY_PREFIX, CdeConfig, CdeEmbedder
from app.model.checkpoint import EMBEDDER_FILES, new_model
from app.model.generic import generic_texts
from app.model.modernbert import after_instruction
from app.model.tiny import make_checkpoint
from tests.conftest import DATA
from tests.conftest import GOLDEN as GOLDEN_V1
from tests.helpers.texts import topical_texts

GOLDEN = DATA / "cde-v2-tiny"
HEADS = ("training", "hub")
CONTEXT = generic_texts(40, seed=3)
DOCS = [
    "The court ruled that the new tax law applies to every company in the state.",
    "x",
    "Energy from the sun reaches the earth in about eight minutes.",
    "word " * 700,  # over 512 tokens
    "Ünïcödé façade — naïve café 東京",
    "A short one: with a colon.",
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.fixture(scope="module")
def v2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random v2 checkpoint made by `make_checkpoint` (hidden 64, 4 layers, context 16)."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny-v2"), family="v2", seed=1)


@pytest.fixture(scope="module")
def v2(v2_dir: Path) -> CdeEmbedder:
    """One fp32 CPU v2 embedder (training head) for this module; tests must not mutate it."""
    return CdeEmbedder.from_pretrained(v2_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def v2_context(v2: CdeEmbedder) -> np.ndarray:
    return v2.embed_context(CONTEXT)


@pytest.fixture()
def v2_copy(v2_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(v2_dir, tmp_path / "model"))


@pytest.fixture(scope="module")
def golden() -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    inputs = json.loads((GOLDEN / "inputs.json").read_text())
    expected = json.loads((GOLDEN / "expected.json").read_text())
    return inputs, {k: np.array(v) for k, v in expected.items()}


# ---- golden vectors from independent implementations ------------------------------------------
@pytest.mark.parametrize("head", HEADS)
def test_golden_vectors_reproduced_in_fp32(head: str, golden: Any) -> None:
    inputs, expected = golden
    model = CdeEmbedder.from_pretrained(
        GOLDEN / "checkpoint", device="cpu", dtype="float32", v2_head=head
    )
    assert (model.family, model.v2_head, model.context_size, model.dim) == ("v2", head, 16, 64)
    dataset = model.embed_context(inputs["context"])
    np.testing.assert_allclose(dataset, expected["dataset_embeddings"], atol=1e-4, rtol=0)
    for name, got in (
        ("documents", model.embed_documents(inputs["documents"], dataset).vectors),
        ("queries", model.embed_queries(inputs["queries"], dataset).vectors),
    ):
        want = expected[f"{name}_{head}"]
        assert cosines(got, want).min() >= 0.99999, name
        assert np.abs(got - want).max() <= 1e-4, name


def test_the_two_heads_differ(golden: Any) -> None:
    _inputs, expected = golden
    assert cosines(expected["documents_training"], expected["documents_hub"]).max() < 0.999


def test_context_order_matters_in_v2_only(
    v2: CdeEmbedder, v2_context: np.ndarray, embedder: CdeEmbedder
) -> None:
    # v2 rotates every prefix position, so a permuted context is another context...
    permuted = v2_context[np.random.default_rng(0).permutation(len(v2_context))]
    a = v2.embed_documents(DOCS[:3], v2_context).vectors
    b = v2.embed_documents(DOCS[:3], permuted).vectors
    assert cosines(a, b).max() < 0.9999
    # ...while v1 leaves the dataset-embedding positions unrotated: order carries nothing.
    v1_context = embedder.embed_context(CONTEXT)
    v1_permuted = v1_context[np.random.default_rng(0).permutation(len(v1_context))]
    c = embedder.embed_documents(DOCS[:3], v1_context).vectors
    d = embedder.embed_documents(DOCS[:3], v1_permuted).vectors
    assert cosines(c, d).min() >= 0.99999


def test_instruction_is_everything_up_to_the_first_real_colon() -> None:
    colon = 9
    ids = torch.tensor(
        [
            [1, 5, colon, 6, colon, 7, 2],  # first colon at 2: positions 0..2 left out
            [colon, 5, 6, 7, 2, 0, 0],  # a colon at position 0 does not count; none after
            [1, 5, 6, 2, colon, 0, 0],  # the only colon is padding: nothing left out
        ]
    )
    mask = torch.tensor([[1] * 7, [1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0, 0]])
    out = after_instruction(ids, mask, colon)
    assert out.tolist() == [[0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0, 0]]
    assert out.dtype == mask.dtype


# ---- configuration and loading -----------------------------------------------------------------
def test_official_v2_config_means_modernbert_base() -> None:
    official = json.loads((GOLDEN / "checkpoint" / "config.json").read_text())
    assert CdeConfig.from_dict(official).backbone.to_dict()["hidden_size"] == 64
    del official["backbone_config"]
    cfg = CdeConfig.from_dict(official)
    assert (cfg.family, cfg.dim, cfg.backbone.n_embd) == ("v2", 768, 768)
    with torch.device("meta"):
        model = new_model(cfg, v2_head="hub")
    # jxm/cde-small-v2's published parameter count
    assert sum(t.numel() for t in model.state_dict().values()) == 305_706_240
    # the v1 golden config still means v1
    assert (
        CdeConfig.from_dict(
            json.loads((GOLDEN_V1 / "checkpoint" / "config.json").read_text())
        ).family
        == "v1"
    )


def test_sdpa_is_set_explicitly_and_rotary_tables_are_real(v2: CdeEmbedder) -> None:
    for backbone in (v2.model.first_stage_model.embedder, v2.model.second_stage_model.backbone):
        assert backbone.config._attn_implementation == "sdpa"
        for name, buffer in backbone.named_buffers():
            assert not buffer.is_meta and bool(torch.isfinite(buffer).all()), name


def test_missing_unexpected_and_mismatched_keys_are_all_named(v2_copy: Path) -> None:
    state = load_file(v2_copy / "model.safetensors")
    del state["first_stage_model.embedder.layers.2.attn_norm.weight"]
    del state["second_stage_model.backbone.final_norm.weight"]
    state["first_stage_model.embedder.layers.0.attn_norm.weight"] = torch.ones(
        64
    )  # layer 0 has none
    state["second_stage_model.output_projection.2.weight"] = torch.zeros(64, 32)
    save_file(state, v2_copy / "model.safetensors")
    with pytest.raises(ModelLoadError) as err:
        CdeEmbedder.from_pretrained(v2_copy, device="cpu")
    msg = str(err.value)
    assert "missing keys (2): first_stage_model.embedder.layers.2.attn_norm.weight, " in msg
    assert "second_stage_model.backbone.final_norm.weight" in msg
    assert "unexpected keys (1): first_stage_model.embedder.layers.0.attn_norm.weight" in msg
    assert "output_projection.2.weight (checkpoint (64, 32), model (64, 64))" in msg


def test_tokenizer_special_ids_come_from_the_files() -> None:
    model = CdeEmbedder.from_pretrained(GOLDEN / "checkpoint", device="cpu", v2_head="hub")
    tok = model.tokenizer
    # the golden tokenizer puts them at 0..4, ModernBERT at 50280..50284
    assert (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id) == (1, 2, 3)
    ids, _ = model.tokenize(["hello there"], DOCUMENT_PREFIX)
    assert ids[0][0] == 1 and ids[0][-1] == 2
    assert tok.decode(ids[0]) == "[CLS]search_document: hello there[SEP]"
    # padding uses the file's pad id, and colons are found by the file's id for ": "
    input_ids, mask = model._pad([[1, 7, 2], [1, 2]])
    assert input_ids.tolist() == [[1, 7, 2], [1, 2, 3]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert tok.convert_ids_to_tokens(tok.encode(": ", add_special_tokens=False))[0] == ":"


def test_tiny_v2_tokenizer_has_its_own_ids(v2: CdeEmbedder) -> None:
    tok = v2.tokenizer
    assert len(tok) == 2048 and tok.cls_token_id not in range(5)
    assert (
        v2.model.second_stage_model.instruction_end_id
        == tok.encode(": ", add_special_tokens=False)[0]
    )
    ids, _ = v2.tokenize(["hello"], QUERY_PREFIX)
    assert ids[0][0] == tok.cls_token_id and ids[0][-1] == tok.sep_token_id


def test_tokenizer_that_disagrees_with_the_config_is_refused(v2_copy: Path) -> None:
    config = json.loads((v2_copy / "config.json").read_text())
    config["backbone_config"]["cls_token_id"] = 50281  # ModernBERT-base's, not this tokenizer's
    (v2_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ModelLoadError, match=r"cls_token_id is 2044 but the backbone config says 50281"
    ):
        CdeEmbedder.from_pretrained(v2_copy, device="cpu")


def test_v2_folder_without_tokenizer_says_where_to_get_it(v2_copy: Path) -> None:
    (v2_copy / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json is missing") as err:
        CdeEmbedder.from_pretrained(v2_copy, device="cpu")
    assert "answerdotai/ModernBERT-base" in str(err.value) and "hf download" in str(err.value)


def test_hub_checkpoint_takes_backbone_config_and_tokenizer_from_the_embedder_repo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, golden: Any
) -> None:
    # The hub layout: cde-small-v2 has config (no backbone_config) and weights only; the
    # embedder repo has ModernBERT's config.json and the tokenizer. No network: a fake hub.
    cde, embedder = tmp_path / "cde", tmp_path / "embedder"
    cde.mkdir()
    embedder.mkdir()
    config = json.loads((GOLDEN / "checkpoint" / "config.json").read_text())
    (embedder / "config.json").write_text(json.dumps(config.pop("backbone_config")))
    (cde / "config.json").write_text(json.dumps(config))
    shutil.copy(GOLDEN / "checkpoint" / "model.safetensors", cde)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(GOLDEN / "checkpoint" / name, embedder)
    calls: list[tuple[str, list[str]]] = []

    def snapshot_download(repo_id: str, allow_patterns: list[str], **_: Any) -> str:
        calls.append((repo_id, allow_patterns))
        return str({"jxm/cde-small-v2": cde, "answerdotai/ModernBERT-base": embedder}[repo_id])

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    model = CdeEmbedder.from_pretrained("jxm/cde-small-v2", device="cpu", dtype="float32")
    assert calls[1] == ("answerdotai/ModernBERT-base", EMBEDDER_FILES)
    assert model.model_id == "jxm/cde-small-v2" and model.folder == cde
    inputs, expected = golden
    dataset = model.embed_context(inputs["context"])
    got = model.embed_queries(inputs["queries"], dataset).vectors
    assert cosines(got, expected["queries_training"]).min() >= 0.99999


def test_bad_head_refused(v2_dir: Path) -> None:
    with pytest.raises(InvalidInput, match="v2_head must be one of"):
        CdeEmbedder.from_pretrained(v2_dir, device="cpu", v2_head="mean")  # type: ignore[arg-type]


def test_v2_head_is_ignored_for_v1(tiny_model_dir: Path, embedder: CdeEmbedder) -> None:
    other = CdeEmbedder.from_pretrained(tiny_model_dir, device="cpu", v2_head="hub")
    assert other.v2_head is None and other.fingerprint == embedder.fingerprint
    context = embedder.embed_context(CONTEXT)
    np.testing.assert_array_equal(
        other.embed_documents(DOCS[:2], context).vectors,
        embedder.embed_documents(DOCS[:2], context).vectors,
    )


# ---- the embedding API on v2 --------------------------------------------------------------------
def test_facts_for_upper_layers(v2: CdeEmbedder, v2_dir: Path, embedder: CdeEmbedder) -> None:
    assert (v2.family, v2.default_api_name, v2.context_size, v2.dim) == (
        "v2",
        "cde-small-v2",
        16,
        64,
    )
    assert v2.model_id == str(v2_dir) and v2.max_seq_length == 512
    assert (embedder.family, embedder.default_api_name, embedder.context_size) == (
        "v1",
        "cde-small-v1",
        16,
    )


def test_shapes_and_truncation_at_512_text_tokens(v2: CdeEmbedder, v2_context: np.ndarray) -> None:
    assert v2_context.shape == (16, 64) and v2_context.dtype == np.float32
    out = v2.embed_documents(DOCS, v2_context)
    assert out.vectors.shape == (len(DOCS), 64)
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)
    assert out.truncated == [False, False, False, True, False, False]
    assert out.token_counts[3] == 512 and all(
        n < 512 for i, n in enumerate(out.token_counts) if i != 3
    )
    # the 512 tokens end with [SEP], as the tokenizer's template puts it
    ids, _ = v2.tokenize(DOCS[3:4], DOCUMENT_PREFIX)
    assert ids[0][-1] == v2.tokenizer.sep_token_id


def test_the_training_head_skips_the_instruction(
    v2_dir: Path, v2: CdeEmbedder, v2_context: np.ndarray
) -> None:
    hub = CdeEmbedder.from_pretrained(v2_dir, device="cpu", dtype="float32", v2_head="hub")
    a = v2.embed_queries(DOCS[:3], v2_context).vectors
    b = hub.embed_queries(DOCS[:3], v2_context).vectors
    assert cosines(a, b).max() < 0.9999
    assert hub.fingerprint != v2.fingerprint  # same weights, but other vectors


def test_batch_composition_never_changes_a_result(v2_dir: Path, v2_context: np.ndarray) -> None:
    # one text per batch against mixed lengths padded together (pads reach far beyond the ±8
    # local window, so padded rows see no real key in local layers)
    alone = CdeEmbedder.from_pretrained(v2_dir, device="cpu", token_budget=16 + 8 + 512)
    packed = CdeEmbedder.from_pretrained(v2_dir, device="cpu", token_budget=200_000)
    texts = DOCS + generic_texts(20, seed=9, min_words=1, max_words=200)
    a = alone.embed_documents(texts, v2_context).vectors
    b = packed.embed_documents(texts, v2_context).vectors
    assert (
        len(packed.plan_batches([len(x) for x in packed.tokenize(texts, DOCUMENT_PREFIX)[0]], 24))
        == 1
    )
    assert cosines(a, b).min() >= 0.99999
    order = np.random.default_rng(1).permutation(len(texts))
    c = packed.embed_documents([texts[i] for i in order], v2_context).vectors
    assert cosines(c, b[order]).min() >= 0.99999
    np.testing.assert_allclose(
        alone.embed_context(CONTEXT), packed.embed_context(CONTEXT), atol=1e-5
    )


def test_bfloat16_stays_close_to_fp32(
    v2_dir: Path, v2: CdeEmbedder, v2_context: np.ndarray
) -> None:
    half = CdeEmbedder.from_pretrained(v2_dir, device="cpu", dtype="bfloat16")
    assert half.model.second_stage_model.backbone.final_norm.weight.dtype == torch.bfloat16
    a = v2.embed_documents(DOCS, v2_context).vectors
    b = half.embed_documents(DOCS, v2_context).vectors  # same (fp32) context: stage 2 only
    assert b.dtype == np.float32
    assert cosines(a, b).min() >= 0.999
    c = half.embed_documents(DOCS, half.embed_context(CONTEXT)).vectors  # both stages in bf16
    assert cosines(a, c).min() >= 0.999


# ---- tiny checkpoints, fingerprints ------------------------------------------------------------
def test_make_tiny_model_v2_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    assert main(["make-tiny-model", str(tmp_path / "m"), "--family", "v2", "--seed", "3"]) == 0
    assert "cde-small-v2" in capsys.readouterr().out
    folder = tmp_path / "m"
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["ContextualDocumentEmbeddingTransformer"]
    assert config["embedder"] == "answerdotai/ModernBERT-base"
    assert config["backbone_config"]["model_type"] == "modernbert"
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= {
        p.name for p in folder.iterdir()
    }
    model = CdeEmbedder.from_pretrained(folder, device="cpu")
    assert model.family == "v2" and model.dim == 64
    again = CdeEmbedder.from_pretrained(folder, device="cpu", dtype="bfloat16")
    assert model.fingerprint == again.fingerprint  # same file, any dtype
    assert len(model.fingerprint) == 16 and int(model.fingerprint, 16) >= 0


def test_fingerprint_is_stable_and_tells_checkpoints_apart(
    v2_dir: Path, v2: CdeEmbedder, tiny_model_dir: Path, embedder: CdeEmbedder, tmp_path: Path
) -> None:
    assert CdeEmbedder.from_pretrained(v2_dir, device="cpu").fingerprint == v2.fingerprint
    other_v2 = make_checkpoint(tmp_path / "v2-seed2", family="v2", seed=2)
    assert CdeEmbedder.from_pretrained(other_v2, device="cpu").fingerprint != v2.fingerprint
    # v1 as well
    assert (
        CdeEmbedder.from_pretrained(tiny_model_dir, device="cpu").fingerprint
        == embedder.fingerprint
    )
    other_v1 = make_checkpoint(tmp_path / "v1-seed2", seed=2)
    fingerprints = {
        embedder.fingerprint,
        v2.fingerprint,
        CdeEmbedder.from_pretrained(other_v1, device="cpu").fingerprint,
        CdeEmbedder.from_pretrained(GOLDEN_V1 / "checkpoint", device="cpu").fingerprint,
    }
    assert len(fingerprints) == 4
    # one changed weight (past the first bytes of its tensor) is another checkpoint
    copy = Path(shutil.copytree(v2_dir, tmp_path / "edited"))
    state = load_file(copy / "model.safetensors")
    state["second_stage_model.output_projection.2.bias"][-1] += 1.0
    save_file(state, copy / "model.safetensors")
    assert CdeEmbedder.from_pretrained(copy, device="cpu").fingerprint != v2.fingerprint


# ---- through the command line, as a user runs it ------------------------------------------------
@pytest.fixture()
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """In-process mode: local storage under tmp_path, no Redis, no other CDEQ_* setting."""
    for key in [k for k in os.environ if k.startswith("CDEQ_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CDEQ_QDRANT__PATH", str(tmp_path / "qdrant"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def test_ingest_and_search_with_a_v2_model(
    v2_dir: Path, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    texts = topical_texts(40, seed=8)
    docs = cli_env / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    assert main(["ingest", str(docs), "--collection", "c", "--model", str(v2_dir), "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert (outcome["state"], outcome["succeeded"], outcome["total"]) == ("done", 40, 40)
    assert main(["search", "c", texts[3], "--top-k", "3", "--json", "--model", str(v2_dir)]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3 and hits[0]["id"] == "d3"


# ---- the real weights: which head does the hub run? ---------------------------------------------
# sentence-transformers' test_cde_small_v2 (hub code, natural-questions): context = the last 512
# answers, queries = query[:2], documents = answer[:5]; cosine similarities, atol 1e-3.
ANCHOR = np.array(
    [[0.8778, 0.7851, 0.7810, 0.7781, 0.7966], [0.7916, 0.8648, 0.7845, 0.7865, 0.8136]]
)
REAL_WEIGHTS = os.environ.get("CDEQ_V2_WEIGHTS")
NQ_DATA = os.environ.get("CDEQ_V2_NQ")
needs_real = pytest.mark.skipif(
    not (REAL_WEIGHTS and NQ_DATA and Path(REAL_WEIGHTS).is_dir() and Path(NQ_DATA).is_file()),
    reason="set CDEQ_V2_WEIGHTS (jxm/cde-small-v2 folder with ModernBERT tokenizer files) and "
    "CDEQ_V2_NQ (natural-questions as JSON lines with query/answer) to run; see docs/models.md",
)


def read_nq(path: Path) -> tuple[list[str], list[str]]:
    """(queries, answers) from JSON lines ({"query", "answer"} per line, in the data set's order)."""
    rows = [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    return [r["query"] for r in rows], [r["answer"] for r in rows]


@pytest.fixture(scope="module")
def real_similarities() -> dict[str, np.ndarray]:
    assert REAL_WEIGHTS and NQ_DATA
    queries, answers = read_nq(Path(NQ_DATA))
    out = {}
    for head in HEADS:
        model = CdeEmbedder.from_pretrained(REAL_WEIGHTS, dtype="float32", v2_head=head)  # type: ignore[arg-type]
        dataset = model.embed_context(answers[-512:])  # exactly 512: all of them, in order
        q = model.embed_queries(queries[:2], dataset).vectors
        d = model.embed_documents(answers[:5], dataset).vectors
        out[head] = q @ d.T
        print(f"\n{head} head:\n{np.array2string(out[head], precision=4)}")
    return out


@needs_real
def test_real_weights_reproduce_the_sentence_transformers_anchor(
    real_similarities: dict[str, np.ndarray],
) -> None:
    matching = [
        h for h, sims in real_similarities.items() if np.allclose(sims, ANCHOR, atol=1e-3, rtol=0)
    ]
    assert matching, f"no head reproduces the anchor: {real_similarities}"


@needs_real
def test_real_weights_the_hub_runs_the_hub_head(real_similarities: dict[str, np.ndarray]) -> None:
    # docs/model.md ("cde-small-v2") expects the "hub" head here. If instead only "training" matches, the
    # hub code runs the training head: update "Choosing v1 or v2" in docs/models.md.
    assert np.allclose(real_similarities["hub"], ANCHOR, atol=1e-3, rtol=0), real_similarities


def test_the_api_reports_the_v2_name_and_the_head_setting_reaches_the_model(
    v2_dir: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from app.api import create_app
    from app.config import Settings
    from app.service import Cdeq

    settings = Settings(
        model={"name": str(v2_dir), "device": "cpu", "v2_head": "hub"},
        redis={"url": None},
        qdrant={"path": str(tmp_path / "q")},
    )
    service = Cdeq(settings)
    assert service.api_model_name() == "cde-small-v2"  # from the folder, before any load
    try:
        with TestClient(create_app(settings, service)) as client:
            assert service.embedder.v2_head == "hub"
            assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["cde-small-v2"]
            r = client.post("/v1/embeddings", json={"input": "tides", "model": "cde-small-v2"})
            assert r.status_code == 200 and r.json()["model"] == "cde-small-v2"
            r = client.post("/v1/embeddings", json={"input": "tides", "model": "cde-small-v1"})
            assert r.status_code == 404
    finally:
        service.close()
