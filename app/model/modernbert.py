"""The cde-small-v2 forward: transformers' `ModernBertModel` as the backbone of both stages.

Follows docs/model.md ("cde-small-v2"). The backbone is the stock class, as the official code loads it;
what is ours is how stage 2 feeds it (prefix embeddings as `inputs_embeds`, so text tokens
pass `embeddings.norm` twice) and the two heads ("training" / "hub", "Stage 2" 5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, get_args

import torch

import app.model.stages as stages  # by its full name: not through the package's __init__
from app.errors import ModelLoadError
from app.model.config import CdeConfig, ModernBertBackboneConfig

if TYPE_CHECKING:
    from transformers import ModernBertModel

V2Head = Literal["training", "hub"]
V2_HEADS: tuple[str, ...] = get_args(V2Head)
# Set explicitly: transformers 4.48-4.57 pick flash-attention on their own when it is
# installed and then compute attention in bf16 even for an fp32 model ("Pitfalls").
ATTENTION_IMPLEMENTATION = "sdpa"


def modernbert_config(backbone: ModernBertBackboneConfig) -> Any:
    """transformers' `ModernBertConfig` for these sizes, with our attention implementation."""
    try:
        from transformers import ModernBertConfig
    except ImportError as exc:  # transformers < 4.48
        raise ModelLoadError(
            "cde-small-v2 needs transformers' ModernBertModel (transformers >= 4.48)"
        ) from exc
    options: dict[str, Any] = {
        **backbone.to_dict(),
        "attn_implementation": ATTENTION_IMPLEMENTATION,
        # some 4.x versions would otherwise torch.compile parts of the model on CUDA
        "reference_compile": False,
    }
    return ModernBertConfig(**options)


def new_backbone(backbone: ModernBertBackboneConfig) -> ModernBertModel:
    from transformers import ModernBertModel

    model = ModernBertModel(modernbert_config(backbone))
    chosen = model.config._attn_implementation
    if chosen != ATTENTION_IMPLEMENTATION:
        raise ModelLoadError(
            f"ModernBertModel chose attention {chosen!r} instead of {ATTENTION_IMPLEMENTATION!r}"
        )
    return model


def rebuild_rotary(backbone: ModernBertModel, device: torch.device) -> None:
    """Recompute the rotary inverse frequencies, which checkpoints do not store: built on the
    meta device they are garbage, and every output NaN ("Weights")."""
    rotary = getattr(backbone, "rotary_emb", None)
    if rotary is None:  # transformers 4.x keeps one table per attention layer
        raise ModelLoadError(
            "this transformers version keeps ModernBERT's rotary tables per layer; cdeq builds "
            "them for transformers 5 (upgrade transformers)"
        )
    backbone.rotary_emb = type(rotary)(config=backbone.config, device=device)


def after_instruction(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, instruction_end_id: int
) -> torch.Tensor:
    """(B, L) mask of the real tokens after the instruction: the instruction ends at the first
    real token equal to `instruction_end_id` (the colon) at position > 0; that token and all
    before it are left out. Rows without one keep every real token."""
    _B, L = input_ids.shape
    real = attention_mask.bool()
    ends = (input_ids == instruction_end_id) & real
    ends[:, 0] = False
    has_end = ends.any(dim=1)  # (B,)
    first_end = ends.to(torch.int8).argmax(dim=1)  # (B,): the first True, 0 when none
    positions = torch.arange(L, device=input_ids.device)
    instruction = (positions[None, :] <= first_end[:, None]) & has_end[:, None]  # (B, L)
    return (real & ~instruction).to(attention_mask.dtype)


class FirstStage(stages.FirstStage):
    """Stage 1 on ModernBERT: `ModernBertModel(ids, mask).last_hidden_state`, as for v1."""

    embedder: ModernBertModel

    def __init__(self, backbone: ModernBertBackboneConfig) -> None:
        super().__init__(new_backbone(backbone), backbone.hidden_size)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.embedder(input_ids=input_ids, attention_mask=attention_mask)
        hidden: torch.Tensor = out.last_hidden_state
        return hidden


class SecondStage(stages.SecondStage):
    """Stage 2 on ModernBERT ("Stage 2"): every position rotated (the prefix too, so the order
    of the dataset embeddings matters), text tokens normed twice, and one of two heads:

    - "training": mean over the text tokens after the instruction (`search_query:` …, up to
      the first colon), then `output_projection(pooled) + pooled`;
    - "hub": mean over every text token, then `output_projection(pooled)`.
    """

    backbone: ModernBertModel

    def __init__(self, cfg: CdeConfig, head: V2Head, instruction_end_id: int | None) -> None:
        assert isinstance(cfg.backbone, ModernBertBackboneConfig)
        if head not in V2_HEADS:
            raise ValueError(f"v2 head must be one of {V2_HEADS}, got {head!r}")
        if head == "training" and instruction_end_id is None:
            raise ValueError("the training head needs the colon's token id (instruction_end_id)")
        super().__init__(new_backbone(cfg.backbone), cfg)
        self.head = head
        self.instruction_end_id = instruction_end_id

    def text_hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix: torch.Tensor
    ) -> torch.Tensor:
        B, _L = input_ids.shape
        P = prefix.shape[0]
        # `embeddings` applies embeddings.norm; ModernBertModel applies it again to the whole
        # sequence below. Not idempotent (the norm has a weight): the official forward does
        # exactly this.
        text = self.backbone.embeddings(input_ids=input_ids)  # (B, L, D)
        x = torch.cat((prefix.to(text.dtype).expand(B, P, -1), text), dim=1)  # (B, P+L, D)
        mask = torch.cat((attention_mask.new_ones(B, P), attention_mask), dim=1)  # (B, P+L)
        # Positions: ModernBertModel's default arange over the whole sequence; right padding
        # shifts nothing. Local layers see ±local_attention/2 of these absolute positions.
        out = self.backbone(inputs_embeds=x, attention_mask=mask)
        hidden: torch.Tensor = out.last_hidden_state
        return hidden[:, P:]  # (B, L, D)

    def pool_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.head == "hub" or self.instruction_end_id is None:
            return attention_mask
        return after_instruction(input_ids, attention_mask, self.instruction_end_id)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        out = self.output_projection(pooled)
        return out + pooled if self.head == "training" else out


class ContextualDocumentEmbeddingTransformer(stages.TwoStageModel):
    """cde-small-v2 (`ContextualDocumentEmbeddingTransformer`): both stages on ModernBERT."""

    first_stage_model: FirstStage
    second_stage_model: SecondStage

    def __init__(
        self, cfg: CdeConfig, *, head: V2Head = "training", instruction_end_id: int | None = None
    ) -> None:
        assert isinstance(cfg.backbone, ModernBertBackboneConfig)
        super().__init__(cfg, FirstStage(cfg.backbone), SecondStage(cfg, head, instruction_end_id))

    def materialize_buffers(self, device: torch.device) -> None:
        rebuild_rotary(self.first_stage_model.embedder, device)
        rebuild_rotary(self.second_stage_model.backbone, device)
