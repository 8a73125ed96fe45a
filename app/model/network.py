"""The cde-small-v1 forward in pure PyTorch: a nomic-bert backbone used by two stages.

Follows the training-time forward of "Contextual Document Embeddings" (arXiv:2410.02525,
§3-4) as written up in docs/model.md. Module names equal the official checkpoint's key
names, so loading is a key-by-key copy (see checkpoint.py for the table). What both versions
share (pooling, soft prompt, heads) is in stages.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import app.model.stages as stages  # by its full name: not through the package's __init__
from app.model.config import BackboneConfig, CdeConfig

# On CPU, attention runs per sequence over its real tokens, HEADS_PER_STEP heads per matmul
# (`attention_by_sequence`); False: PyTorch's fused SDPA with a key padding mask, as on other
# devices. Measured in bench/README.md.
ATTENTION_BY_SEQUENCE_ON_CPU = True
HEADS_PER_STEP = 4


def rotary_cos_sin(
    positions: torch.Tensor, rotary_dim: int, base: float, *, unrotated: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (T, rotary_dim/2) in fp32 for integer `positions` (T,).

    `unrotated` (T,) bool marks positions that get no rotation (cos 1, sin 0): the dataset
    embeddings in stage 2 (config `disable_transductive_rotary_embedding`).
    """
    inv_freq = 1.0 / (
        base
        ** (
            torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=positions.device)
            / rotary_dim
        )
    )
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (T, rd/2)
    if unrotated is not None:
        angles = angles.masked_fill(unrotated[:, None], 0.0)
    return angles.cos(), angles.sin()


def apply_rotary(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, interleaved: bool
) -> torch.Tensor:
    """Rotate the first rotary_dim channels of x (B, nh, T, hd); math in fp32."""
    rotary_dim = cos.shape[-1] * 2
    x_rot, x_pass = x[..., :rotary_dim].float(), x[..., rotary_dim:]
    if interleaved:  # pairs (0,1), (2,3), ... (GPT-J style)
        x1, x2 = x_rot[..., 0::2], x_rot[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    else:  # halves (GPT-NeoX style), nomic-bert's default
        x1, x2 = x_rot.chunk(2, dim=-1)
        out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return torch.cat((out.to(x.dtype), x_pass), dim=-1)


def rotate_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, interleaved: bool) -> None:
    """Rotate x (B, T, ..., hd) in place at its T positions; cos/sin (T, rotary_dim/2) fp32.

    Same rotation as `apply_rotary`, written back into x (a view of the fused qkv output) so
    no q/k copies are made; the products are taken in fp32 and rounded once."""
    half = cos.shape[-1]
    bshape = (cos.shape[0],) + (1,) * (x.dim() - 3) + (half,)  # (T, 1.., rd/2) over the heads
    cos, sin = cos.view(bshape), sin.view(bshape)
    if interleaved:  # pairs (0,1), (2,3), ... (GPT-J style)
        x1, x2 = x[..., 0 : 2 * half : 2], x[..., 1 : 2 * half : 2]
    else:  # halves (GPT-NeoX style), nomic-bert's default
        x1, x2 = x[..., :half], x[..., half : 2 * half]
    f1, f2 = x1.float(), x2.float()  # the same memory as x1/x2 in fp32: compute both first
    r1 = f1 * cos - f2 * sin
    r2 = f1 * sin + f2 * cos
    x1.copy_(r1)
    x2.copy_(r2)


def attention_by_sequence(
    qkv: torch.Tensor, lengths: list[int], query_from: int, heads_per_step: int
) -> torch.Tensor:
    """Softmax attention of each row's first `lengths[b]` tokens among themselves, a few heads
    of one sequence at a time; q must be pre-scaled. qkv (B, T, 3, nh, hd) → (B, T - query_from,
    nh, hd), zero at padded positions.

    Equal to key-masked SDPA on right-padded rows, but pads cost nothing, and each step's
    scores (heads_per_step × ≤ 1032² floats) stay in cache."""
    B, T, _, nh, hd = qkv.shape
    y = qkv.new_empty(B, T - query_from, nh, hd)
    for b, n in enumerate(lengths):
        y[b, max(n - query_from, 0) :] = 0  # padded positions
        if n <= query_from:
            continue
        for h0 in range(0, nh, heads_per_step):
            heads = slice(h0, h0 + heads_per_step)
            q = qkv[b, query_from:n, 0, heads].transpose(0, 1)  # (c, n - query_from, hd)
            k = qkv[b, :n, 1, heads].transpose(0, 1)  # (c, n, hd)
            v = qkv[b, :n, 2, heads].transpose(0, 1)  # (c, n, hd)
            p = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)  # (c, n - query_from, n)
            y[b, : n - query_from, heads] = torch.bmm(p, v).transpose(0, 1)
    return y


class Attention(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.head_dim = cfg.head_dim
        self.interleaved = cfg.rotary_emb_interleaved
        self.Wqkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.out_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, h: torch.Tensor, layout: SequenceLayout, query_from: int = 0) -> torch.Tensor:
        """h (B, T, D) → attention output for positions ≥ query_from, (B, T - query_from, D)."""
        B, T, D = h.shape
        qkv = self.Wqkv(h).view(B, T, 3, self.n_head, self.head_dim)  # q | k | v
        # rotary on q and k, in place, at the rotated positions only (cos 1 / sin 0 elsewhere)
        rotate_(
            qkv[:, layout.rotate_from :, :2], layout.cos, layout.sin, interleaved=self.interleaved
        )
        if layout.lengths is not None:
            qkv[:, query_from:, 0].mul_(self.head_dim**-0.5)  # SDPA's scale, folded into q
            y = attention_by_sequence(qkv, layout.lengths, query_from, HEADS_PER_STEP)
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, T, hd)
            y = F.scaled_dot_product_attention(q[:, :, query_from:], k, v, attn_mask=layout.mask)
            y = y.transpose(1, 2)
        return self.out_proj(y.reshape(B, T - query_from, D))


class SwiGLU(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.fc11 = nn.Linear(cfg.n_embd, cfg.n_inner, bias=False)
        self.fc12 = nn.Linear(cfg.n_embd, cfg.n_inner, bias=False)  # the gate
        self.fc2 = nn.Linear(cfg.n_inner, cfg.n_embd, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # fc2(fc11(h) * silu(fc12(h))), in place: one (B, T, n_inner) buffer fewer
        gate = F.silu(self.fc12(h), inplace=True)
        return self.fc2(gate.mul_(self.fc11(h)))


class Block(nn.Module):
    """Post-norm transformer block: h = norm1(h + attn(h)); h = norm2(h + mlp(h))."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = SwiGLU(cfg)
        self.norm1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.norm2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)

    def forward(self, h: torch.Tensor, layout: SequenceLayout, query_from: int = 0) -> torch.Tensor:
        """(B, T, D) → (B, T - query_from, D): every position is a key, but only positions
        ≥ query_from are computed further (the last layer skips what pooling ignores)."""
        h = self.norm1(self.attn(h, layout, query_from).add_(h[:, query_from:]))
        return self.norm2(self.mlp(h).add_(h))


@dataclass
class SequenceLayout:
    """What every layer of one forward shares: rotary tables and how padding is handled."""

    cos: torch.Tensor  # (T - rotate_from, rotary_dim/2) fp32
    sin: torch.Tensor
    rotate_from: int  # positions before this one are not rotated
    lengths: list[int] | None  # real tokens per row → attention_by_sequence; None → SDPA
    mask: torch.Tensor | None  # SDPA key padding mask (B, 1, 1, T), None when nothing is padded


class TokenEmbeddings(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.n_embd)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Token type is always 0; nomic-bert has no learned positions (rotary instead).
        return self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]


class Encoder(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))


class NomicBert(nn.Module):
    """nomic-bert: word + type-0 embeddings, emb_ln, post-norm SwiGLU blocks with rotary."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = TokenEmbeddings(cfg)
        self.emb_ln = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.encoder = Encoder(cfg)

    @property
    def rotary_dim(self) -> int:
        return int(self.cfg.rotary_emb_fraction * self.cfg.head_dim)

    def run(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        n_unrotated: int = 0,
        output_from: int = 0,
    ) -> torch.Tensor:
        """emb_ln + blocks over (B, T, D) embeddings; the first `n_unrotated` positions get no
        rotary. `attention_mask` (B, T) is 1 for real tokens. Returns the last hidden state at
        positions ≥ `output_from`, (B, T - output_from, D): the last layer computes only those
        (earlier positions still serve as its keys and values)."""
        _B, T, _ = inputs_embeds.shape
        positions = torch.arange(n_unrotated, T, device=inputs_embeds.device)
        cos, sin = rotary_cos_sin(positions, self.rotary_dim, self.cfg.rotary_emb_base)
        real = attention_mask.bool()  # (B, T)
        lengths, mask = None, None
        if (
            ATTENTION_BY_SEQUENCE_ON_CPU
            and inputs_embeds.device.type == "cpu"
            and not bool((real[:, 1:] & ~real[:, :-1]).any())  # right-padded: a real prefix
        ):
            lengths = real.sum(1).tolist()  # attention over each row's real tokens only
        elif not bool(real.all()):
            mask = real[:, None, None, :]  # key padding mask (B, 1, 1, T); None: faster kernels
        layout = SequenceLayout(cos, sin, n_unrotated, lengths, mask)
        h = self.emb_ln(inputs_embeds)
        *layers, last = self.encoder.layers
        for layer in layers:
            h = layer(h, layout)
        return last(h, layout, output_from)


class FirstStage(stages.FirstStage):
    """Stage 1 on nomic-bert (`first_stage_model.embedder`)."""

    embedder: NomicBert

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__(NomicBert(cfg), cfg.n_embd)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.embedder.run(self.embedder.embeddings(input_ids), attention_mask)


class SecondStage(stages.SecondStage):
    """Stage 2 on nomic-bert: the 512 dataset-embedding positions unrotated, mean over all text
    tokens, `output_projection` without residual (docs/model.md, "Second stage")."""

    backbone: NomicBert

    def __init__(self, cfg: CdeConfig) -> None:
        assert isinstance(cfg.backbone, BackboneConfig)
        super().__init__(NomicBert(cfg.backbone), cfg)

    def text_hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix: torch.Tensor
    ) -> torch.Tensor:
        B, _L = input_ids.shape
        P = prefix.shape[0]
        text = self.backbone.embeddings(input_ids)  # (B, L, D); the prefix gets no token type
        x = torch.cat((prefix.to(text.dtype).expand(B, P, -1), text), dim=1)  # (B, P+L, D)
        mask = torch.cat((attention_mask.new_ones(B, P), attention_mask), dim=1)
        n_unrotated = (
            self.cfg.transductive_corpus_size
            if self.cfg.disable_transductive_rotary_embedding
            else 0
        )
        return self.backbone.run(x, mask, n_unrotated=n_unrotated, output_from=P)  # (B, L, D)


class DatasetTransformer(stages.TwoStageModel):
    """cde-small-v1 (`DatasetTransformer`): both stages on nomic-bert."""

    def __init__(self, cfg: CdeConfig) -> None:
        assert isinstance(cfg.backbone, BackboneConfig)
        super().__init__(cfg, FirstStage(cfg.backbone), SecondStage(cfg))
