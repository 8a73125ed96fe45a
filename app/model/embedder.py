"""CdeEmbedder: the public face of the model — tokenization, batching, the two stages.

Callers pass plain texts; the library adds the `search_document: ` / `search_query: `
prefixes, sorts texts by length and batches them under a token budget that counts the
stage-2 prefix (dataset embeddings + soft prompt), so throughput is high and memory bounded.
The same API serves cde-small-v1 and v2; the checkpoint's config says which it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from app.errors import DeviceOutOfMemory, InvalidInput, ModelLoadError
from app.model.checkpoint import (
    build_model,
    check_v2_tokenizer,
    fingerprint,
    load_tokenizer,
    locate_checkpoint,
    read_state_dict,
)
from app.model.chunking import ChunkPlan, default_overlap, plan_chunks
from app.model.config import CdeConfig, Family
from app.model.modernbert import V2_HEADS, V2Head
from app.model.modernbert import SecondStage as V2SecondStage
from app.model.stages import TwoStageModel
from app.model.values import (
    Embeddings,
    Progress,
    check_texts,
    dataset_tensor,
    parse_device,
    parse_dtype,
    sample_context,
)

log = logging.getLogger(__name__)

DOCUMENT_PREFIX = "search_document: "
QUERY_PREFIX = "search_query: "
# Padded tokens (prefix included) per forward. CPU: matmul speed is flat from ~500 rows up, so
# small batches cost nothing and pad less (bench/README.md); GPUs want big ones.
DEFAULT_TOKEN_BUDGET = {"cpu": 4_096, "cuda": 262_144}
# The model name an API reports by default, per family.
API_NAMES: dict[Family, str] = {"v1": "cde-small-v1", "v2": "cde-small-v2"}


def _fingerprinted_config(
    raw: dict[str, Any], cfg: CdeConfig, v2_head: V2Head | None
) -> dict[str, Any]:
    """config.json as written, with the backbone config actually used and (v2) the head."""
    out = {**raw, "backbone_config": cfg.backbone.to_dict()}
    if cfg.family == "v2":
        out["cdeq_v2_head"] = v2_head
    return out


class CdeEmbedder:
    """cde-small-v1 or v2 ready to embed: model, tokenizer, device and batching policy."""

    def __init__(
        self,
        model: TwoStageModel,
        tokenizer: Any,
        *,
        model_id: str,
        device: torch.device,
        dtype: torch.dtype,
        token_budget: int | None = None,
        folder: Path | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.model = model
        self.config: CdeConfig = model.cfg
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.device = device
        self.dtype = dtype
        self.folder = folder
        self._fingerprint = fingerprint
        self.token_budget = token_budget or DEFAULT_TOKEN_BUDGET.get(device.type, 16_384)
        self.oom_splits = 0  # forward batches halved after a device out-of-memory error
        if self.token_budget < self.config.prefix_length + self.config.max_seq_length:
            raise InvalidInput(
                f"token_budget must be at least {self.config.prefix_length + self.config.max_seq_length} "
                f"(prefix {self.config.prefix_length} + one {self.config.max_seq_length}-token text), "
                f"got {self.token_budget}",
                field="token_budget",
            )
        # A private copy of the fast tokenizer's engine (the transformers wrapper resets the
        # shared one's truncation on every call), truncating like BERT ([CLS] … [SEP] ≤
        # max_seq_length) and reporting what it cut through `overflowing`.
        engine = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        engine.no_padding()
        engine.enable_truncation(max_length=self.config.max_seq_length)
        self._engine = engine
        # Another copy that never truncates, for chunking: every token of a text, with offsets.
        whole = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        whole.no_padding()
        whole.no_truncation()
        self._whole = whole
        self._pad_id = int(tokenizer.pad_token_id or 0)
        # The soft prompt is a constant of the weights: compute it once.
        with torch.inference_mode():
            self._soft_prompt = model.second_stage_model.soft_prompt()

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike[str],
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        *,
        token_budget: int | None = None,
        v2_head: V2Head = "training",
    ) -> CdeEmbedder:
        """Load a cde-small-v1 or v2 checkpoint in the official layout from a folder or the
        Hugging Face hub; the config's `embedder` (or `backbone_config`) says which.

        Default device: CUDA when available (bfloat16), else CPU (float32). `v2_head`
        ("training" or "hub", docs/model.md, "cde-small-v2": Head) is ignored for v1.
        """
        if v2_head not in V2_HEADS:
            raise InvalidInput(
                f"v2_head must be one of {list(V2_HEADS)}, got {v2_head!r}", field="v2_head"
            )
        dev = parse_device(device)
        dt = parse_dtype(dtype, dev)
        files = locate_checkpoint(path_or_hub_id)
        cfg = files.config
        tokenizer = load_tokenizer(files.tokenizer_folder, cfg.family)
        if len(tokenizer) > cfg.backbone.vocab_size:
            raise ModelLoadError(
                f"{files.tokenizer_folder}: tokenizer has {len(tokenizer)} tokens but the model's "
                f"vocabulary has {cfg.backbone.vocab_size}"
            )
        colon = None
        if cfg.family == "v2":
            colon = check_v2_tokenizer(tokenizer, cfg, files.tokenizer_folder)
        state = read_state_dict(files.folder)
        # The file's tensors (before any cast), so the same checkpoint gives the same
        # fingerprint on every device and dtype.
        stamp = fingerprint(_fingerprinted_config(files.raw_config, cfg, v2_head), state)
        model = build_model(
            cfg, state, dtype=dt, device=dev, v2_head=v2_head, instruction_end_id=colon
        )
        del state
        return cls(
            model,
            tokenizer,
            model_id=str(path_or_hub_id),
            device=dev,
            dtype=dt,
            token_budget=token_budget,
            folder=files.folder,
            fingerprint=stamp,
        )

    # ---- facts --------------------------------------------------------------------------
    @property
    def family(self) -> Family:
        """The model family: "v1" (cde-small-v1, nomic-bert) or "v2" (cde-small-v2, ModernBERT)."""
        return self.config.family

    @property
    def default_api_name(self) -> str:
        """The model name to report when none is configured: cde-small-v1 / cde-small-v2."""
        return API_NAMES[self.family]

    @property
    def v2_head(self) -> V2Head | None:
        """The stage-2 head in use for v2 ("training" or "hub"); None for v1."""
        stage2 = self.model.second_stage_model
        return stage2.head if isinstance(stage2, V2SecondStage) else None

    @property
    def fingerprint(self) -> str:
        """Short hex digest of config and weights: equal for loads of the same checkpoint
        (on any device or dtype), different for another checkpoint. For v2 the head is part of
        it: the two heads give different vectors from the same weights."""
        if self._fingerprint is None:  # built from a model object: hash what it holds
            raw = _fingerprinted_config(self.config.to_dict(), self.config, self.v2_head)
            self._fingerprint = fingerprint(raw, self.model.state_dict())
        return self._fingerprint

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def context_size(self) -> int:
        """How many dataset embeddings a context holds (`transductive_corpus_size`)."""
        return self.config.transductive_corpus_size

    @property
    def max_seq_length(self) -> int:
        return self.config.max_seq_length

    # ---- tokenization -------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], prefix: str) -> tuple[list[list[int]], list[bool]]:
        """Token ids ([CLS] prefix+text [SEP], ≤ max_seq_length) and truncation flags."""
        check_texts(texts)
        encodings = self._engine.encode_batch([prefix + t for t in texts])
        return [e.ids for e in encodings], [bool(e.overflowing) for e in encodings]

    # ---- chunking -----------------------------------------------------------------------
    @property
    def chunk_token_limit(self) -> int:
        """The most tokens of a document text that fit the window after [CLS], the
        `search_document: ` prefix and [SEP]."""
        limit = self.__dict__.get("_chunk_token_limit")
        if limit is None:
            prefix = len(self._whole.encode(DOCUMENT_PREFIX, add_special_tokens=True).ids)
            limit = self.__dict__["_chunk_token_limit"] = self.max_seq_length - prefix
        return int(limit)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` alone (no prefix, no special tokens), untruncated."""
        return len(self._whole.encode(text, add_special_tokens=False).ids)

    def chunk(
        self,
        text: str,
        *,
        budget: int | None = None,
        overlap: int | None = None,
        max_chunks: int | None = None,
    ) -> ChunkPlan:
        """Chunks of `text` of at most `budget` tokens (default and maximum:
        `chunk_token_limit`), consecutive ones sharing `overlap` tokens (default about 12%).

        A chunk is counted again on its own text: where a cut changes how its edges tokenize
        (byte-level BPE merges across the cut), the plan is made again with a smaller budget,
        so every chunk fits as it will be embedded."""
        limit = self.chunk_token_limit
        budget = limit if budget is None else budget
        if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= limit:
            raise InvalidInput(
                f"chunk budget must be from 1 to {limit} tokens for this model "
                f"({self.max_seq_length} minus the document prefix), got {budget!r}",
                field="chunk_tokens",
            )
        overlap = default_overlap(budget) if overlap is None else overlap
        if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
            raise InvalidInput(f"chunk overlap must be an int >= 0, got {overlap!r}")
        if overlap * 2 > budget:
            raise InvalidInput(
                f"chunk overlap ({overlap} tokens) must be at most half the chunk budget "
                f"({budget} tokens)",
                field="chunk_overlap_tokens",
            )
        offsets = self._whole.encode(text, add_special_tokens=False).offsets
        plan_budget = budget
        for _ in range(4):
            plan = plan_chunks(
                text, offsets, plan_budget, min(overlap, plan_budget // 2), max_chunks
            )
            if len(plan.spans) == 1 and not plan.capped:
                return plan
            pieces = [text[s.start : s.end] for s in plan.spans]
            worst = max(
                len(e.ids) for e in self._whole.encode_batch(pieces, add_special_tokens=False)
            )
            if worst <= budget:
                return plan
            plan_budget -= worst - budget
        return plan

    # ---- batching -----------------------------------------------------------------------
    def plan_batches(self, lengths: Sequence[int], extra: int) -> list[list[int]]:
        """Indices grouped longest first so that batch × (extra + longest) ≤ token_budget.

        `extra` is the per-sequence prefix (stage 2: dataset embeddings + soft prompt)."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for i in order:
            if current and (len(current) + 1) * (extra + longest) > self.token_budget:
                batches.append(current)
                current = []
            if not current:
                longest = lengths[i]
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def _pad(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return input_ids.to(self.device), mask.to(self.device)

    def _run(
        self,
        ids: list[list[int]],
        forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        extra: int,
        on_progress: Progress | None,
    ) -> np.ndarray:
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        done = 0
        with torch.inference_mode():
            for batch in self.plan_batches([len(x) for x in ids], extra):
                self._forward_fitting(ids, batch, forward, out)
                done += len(batch)
                if on_progress is not None:
                    on_progress(done, len(ids))
        return out

    def _forward_fitting(
        self,
        ids: list[list[int]],
        batch: list[int],
        forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        out: np.ndarray,
    ) -> None:
        """Forward `batch` into `out`; on device out-of-memory, free the cache and run each
        half (half the token budget) instead, down to one text. Splitting never changes a
        result (texts are independent within a batch)."""
        try:
            input_ids, mask = self._pad([ids[i] for i in batch])
            out[batch] = forward(input_ids, mask).float().cpu().numpy()
            return
        except torch.OutOfMemoryError as exc:
            del exc  # drop the frames that pin the failed allocation's tensors
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(batch) == 1:
            raise DeviceOutOfMemory(
                f"one text of {len(ids[batch[0]])} tokens does not fit in {self.device} memory "
                "even alone; free the device or use a smaller dtype",
                retry_after_s=30.0,
            )
        self.oom_splits += 1
        half = len(batch) // 2
        self._forward_fitting(ids, batch[:half], forward, out)
        self._forward_fitting(ids, batch[half:], forward, out)

    # ---- stage 1 ------------------------------------------------------------------------
    def embed_context(
        self,
        texts: Sequence[str],
        *,
        seed: int = 0,
        on_progress: Progress | None = None,
        warn_below_distinct: int = 32,
    ) -> np.ndarray:
        """Dataset embeddings (context_size, D), raw float32 (stage 1; not normalized).

        `texts` is the collection's corpus; exactly `context_size` of them are used
        (see `sample_context`), each as a `search_document: `. Fewer than
        `warn_below_distinct` distinct texts log a warning (the service passes its
        `min_context_documents` setting)."""
        check_texts(texts)
        chosen = sample_context(list(texts), self.context_size, seed)
        distinct = len(set(chosen))
        if distinct == 1:
            raise InvalidInput(
                "context is degenerate: all texts are identical, which makes embeddings "
                "context-independent; give varied documents (or use the generic context)",
                field="texts",
            )
        if distinct < min(warn_below_distinct, self.context_size):
            log.warning("context has only %d distinct texts; quality will suffer", distinct)
        ids, _ = self.tokenize(chosen, DOCUMENT_PREFIX)
        return self._run(ids, self.model.first_stage_model, 0, on_progress)

    # ---- stage 2 ------------------------------------------------------------------------
    def check_dataset_embeddings(self, dataset_embeddings: Any) -> torch.Tensor:
        """Validate (context_size, D) floating, finite dataset embeddings; to device/dtype."""
        return dataset_tensor(
            dataset_embeddings, (self.context_size, self.dim), self.device, self.dtype
        )

    def _embed(
        self,
        texts: Sequence[str],
        dataset_embeddings: Any,
        prefix: str,
        on_progress: Progress | None,
    ) -> Embeddings:
        context = self.check_dataset_embeddings(dataset_embeddings)
        ids, truncated = self.tokenize(texts, prefix)
        if not ids:
            return Embeddings(np.zeros((0, self.dim), dtype=np.float32), [], [])
        stage2 = self.model.second_stage_model
        prefix_embeds = torch.cat((context, self._soft_prompt.to(context.dtype)), dim=0)
        raw = self._run(
            ids,
            lambda input_ids, mask: stage2(input_ids, mask, prefix_embeds),
            prefix_embeds.shape[0],
            on_progress,
        )
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        vectors = raw / np.maximum(norms, 1e-12)
        return Embeddings(vectors.astype(np.float32), [len(x) for x in ids], truncated)

    def embed_documents(
        self, texts: Sequence[str], dataset_embeddings: Any, *, on_progress: Progress | None = None
    ) -> Embeddings:
        """Unit-norm document vectors (n, D) conditioned on a context (stage 2)."""
        return self._embed(texts, dataset_embeddings, DOCUMENT_PREFIX, on_progress)

    def embed_queries(
        self, texts: Sequence[str], dataset_embeddings: Any, *, on_progress: Progress | None = None
    ) -> Embeddings:
        """Unit-norm query vectors (n, D) conditioned on a context (stage 2)."""
        return self._embed(texts, dataset_embeddings, QUERY_PREFIX, on_progress)
