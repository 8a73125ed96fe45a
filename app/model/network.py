"""The cde-small-v1 forward in pure PyTorch: a nomic-bert backbone used by two stages.

Follows the training-time forward of "Contextual Document Embeddings" (arXiv:2410.02525,
§3-4) as written up in docs/cde-model.md. Module names equal the official checkpoint's key
names, so loading is a key-by-key copy (see checkpoint.py for the table).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from app.model.config import BackboneConfig, CdeConfig


def rotary_cos_sin(
    positions: torch.Tensor, rotary_dim: int, base: float, *, unrotated: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (T, rotary_dim/2) in fp32 for integer `positions` (T,).

    `unrotated` (T,) bool marks positions that get no rotation (cos 1, sin 0): the dataset
    embeddings in stage 2 (config `disable_transductive_rotary_embedding`).
    """
    inv_freq = 1.0 / (
        base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=positions.device) / rotary_dim)
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


class Attention(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.head_dim = cfg.head_dim
        self.interleaved = cfg.rotary_emb_interleaved
        self.Wqkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.out_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(
        self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        B, T, D = h.shape
        qkv = self.Wqkv(h).view(B, T, 3, self.n_head, self.head_dim)  # q | k | v
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, T, hd)
        q = apply_rotary(q, cos, sin, interleaved=self.interleaved)
        k = apply_rotary(k, cos, sin, interleaved=self.interleaved)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hd)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, D))


class SwiGLU(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.fc11 = nn.Linear(cfg.n_embd, cfg.n_inner, bias=False)
        self.fc12 = nn.Linear(cfg.n_embd, cfg.n_inner, bias=False)  # the gate
        self.fc2 = nn.Linear(cfg.n_inner, cfg.n_embd, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc11(h) * F.silu(self.fc12(h)))


class Block(nn.Module):
    """Post-norm transformer block: h = norm1(h + attn(h)); h = norm2(h + mlp(h))."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = SwiGLU(cfg)
        self.norm1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.norm2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)

    def forward(
        self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        h = self.norm1(h + self.attn(h, cos, sin, mask))
        return self.norm2(h + self.mlp(h))


class Embeddings(nn.Module):
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
        self.embeddings = Embeddings(cfg)
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
    ) -> torch.Tensor:
        """emb_ln + blocks over (B, T, D) embeddings; the first `n_unrotated` positions get no
        rotary. `attention_mask` (B, T) is 1 for real tokens. Returns the last hidden state."""
        B, T, _ = inputs_embeds.shape
        positions = torch.arange(T, device=inputs_embeds.device)
        unrotated = positions < n_unrotated if n_unrotated else None
        cos, sin = rotary_cos_sin(
            positions, self.rotary_dim, self.cfg.rotary_emb_base, unrotated=unrotated
        )
        # Key padding mask (B, 1, 1, T); skipped when nothing is padded (faster kernels).
        mask = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
        h = self.emb_ln(inputs_embeds)
        for layer in self.encoder.layers:
            h = layer(h, cos, sin, mask)
        return h


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of hidden (B, T, D) over positions where mask (B, T) is 1, accumulated in fp32."""
    m = mask.to(torch.float32).unsqueeze(-1)
    return (hidden.float() * m).sum(1) / m.sum(1).clamp_min(1.0)


class FirstStage(nn.Module):
    """Stage 1 (`first_stage_model`): mean-pooled backbone + MLP → one dataset embedding per
    context document."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.embedder = NomicBert(cfg)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, cfg.n_embd), nn.GELU(), nn.Linear(cfg.n_embd, cfg.n_embd)
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.embedder.run(self.embedder.embeddings(input_ids), attention_mask)
        pooled = masked_mean(h, attention_mask).to(h.dtype)  # (B, D)
        return self.mlp(pooled)


class SecondStage(nn.Module):
    """Stage 2 (`second_stage_model`): the text, prefixed by the dataset embeddings and the
    soft prompt, through its own backbone; mean over text tokens; output projection."""

    def __init__(self, cfg: CdeConfig) -> None:
        super().__init__()
        d = cfg.backbone.n_embd
        self.cfg = cfg
        self.backbone = NomicBert(cfg.backbone)
        self.prompt_projection = nn.Sequential(
            nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d * cfg.n_soft_prompt)
        )
        self.output_projection = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))

    def soft_prompt(self) -> torch.Tensor:
        """The soft-prompt tokens (n_soft_prompt, D): prompt_projection applied to ones."""
        w = self.prompt_projection[0].weight
        ones = torch.ones(w.shape[1], dtype=w.dtype, device=w.device)
        return self.prompt_projection(ones).view(self.cfg.n_soft_prompt, -1)

    def prefix(self, dataset_embeddings: torch.Tensor) -> torch.Tensor:
        """(N + n_soft_prompt, D) prefix; the soft prompt takes the dataset embeddings' dtype."""
        soft = self.soft_prompt().to(dataset_embeddings.dtype)
        return torch.cat((dataset_embeddings, soft), dim=0)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix: torch.Tensor
    ) -> torch.Tensor:
        """input_ids/attention_mask (B, L) right-padded; prefix (P, D) from `prefix()`."""
        B, L = input_ids.shape
        P = prefix.shape[0]
        text = self.backbone.embeddings(input_ids)  # (B, L, D); the prefix gets no token type
        x = torch.cat((prefix.to(text.dtype).expand(B, P, -1), text), dim=1)  # (B, P+L, D)
        mask = torch.cat((attention_mask.new_ones(B, P), attention_mask), dim=1)
        n_unrotated = self.cfg.transductive_corpus_size if self.cfg.disable_transductive_rotary_embedding else 0
        h = self.backbone.run(x, mask, n_unrotated=n_unrotated)
        pooled = masked_mean(h[:, P:], attention_mask).to(h.dtype)  # text tokens only
        return self.output_projection(pooled)


class DatasetTransformer(nn.Module):
    """Both stages under the official module names (`first_stage_model`, `second_stage_model`)."""

    def __init__(self, cfg: CdeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.first_stage_model = FirstStage(cfg.backbone)
        self.second_stage_model = SecondStage(cfg)
