"""The two-stage wrapper that cde-small-v1 and v2 share (arXiv:2410.02525, §3-4).

Stage 1 mean-pools a backbone into one dataset embedding per context document; stage 2 runs a
text behind those embeddings and a soft prompt, pools its tokens and projects. What differs
between the versions (the backbone, how the prefix enters it, pooling and head) is left to
one subclass per backbone family: network.py (v1, nomic-bert), modernbert.py (v2).
Module names equal the official checkpoints' key names.
"""

from __future__ import annotations

import torch
from torch import nn

from app.model.config import CdeConfig


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of hidden (B, T, D) over positions where mask (B, T) is 1, accumulated in fp32."""
    m = mask.to(torch.float32).unsqueeze(-1)
    return (hidden.float() * m).sum(1) / m.sum(1).clamp_min(1.0)


class FirstStage(nn.Module):
    """Stage 1 (`first_stage_model`): mean-pooled backbone + `mlp` (Linear, GELU, Linear) → one
    dataset embedding per context document, not normalized."""

    def __init__(self, embedder: nn.Module, dim: int) -> None:
        super().__init__()
        self.embedder = embedder
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The backbone's last hidden state (B, L, D) for right-padded ids (B, L)."""
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.hidden_states(input_ids, attention_mask)
        pooled = masked_mean(h, attention_mask).to(h.dtype)  # every real token, (B, D)
        return self.mlp(pooled)


class SecondStage(nn.Module):
    """Stage 2 (`second_stage_model`): the text, prefixed by the dataset embeddings and the
    soft prompt, through its own backbone; mean over (some of) its text tokens; projection."""

    def __init__(self, backbone: nn.Module, cfg: CdeConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.cfg = cfg
        self.backbone = backbone
        self.prompt_projection = nn.Sequential(
            nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d * cfg.n_soft_prompt)
        )
        self.output_projection = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))

    def soft_prompt(self) -> torch.Tensor:
        """The soft-prompt tokens (n_soft_prompt, D): prompt_projection applied to ones."""
        w = self.prompt_projection[0].weight
        assert isinstance(w, torch.Tensor)
        ones = torch.ones(w.shape[1], dtype=w.dtype, device=w.device)
        return self.prompt_projection(ones).view(self.cfg.n_soft_prompt, -1)

    def prefix(self, dataset_embeddings: torch.Tensor) -> torch.Tensor:
        """(N + n_soft_prompt, D) prefix; the soft prompt takes the dataset embeddings' dtype."""
        soft = self.soft_prompt().to(dataset_embeddings.dtype)
        return torch.cat((dataset_embeddings, soft), dim=0)

    def text_hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix: torch.Tensor
    ) -> torch.Tensor:
        """Last hidden state at the text positions (B, L, D): [prefix ; text] through the
        backbone. The prefix itself is never pooled."""
        raise NotImplementedError

    def pool_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Which text tokens the mean covers (B, L): by default every real one."""
        return attention_mask

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """The head over the pooled text (B, D) → raw output (B, D)."""
        return self.output_projection(pooled)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix: torch.Tensor
    ) -> torch.Tensor:
        """input_ids/attention_mask (B, L) right-padded; prefix (P, D) from `prefix()`."""
        h = self.text_hidden_states(input_ids, attention_mask, prefix)  # (B, L, D)
        pooled = masked_mean(h, self.pool_mask(input_ids, attention_mask)).to(h.dtype)
        return self.project(pooled)


class TwoStageModel(nn.Module):
    """Both stages under the official module names (`first_stage_model`, `second_stage_model`)."""

    def __init__(self, cfg: CdeConfig, first: FirstStage, second: SecondStage) -> None:
        super().__init__()
        self.cfg = cfg
        self.first_stage_model = first
        self.second_stage_model = second

    def materialize_buffers(self, device: torch.device) -> None:
        """Recreate on `device` the buffers a checkpoint does not store, after a model built on
        the meta device received its weights. Nothing to do unless a backbone has such buffers."""
