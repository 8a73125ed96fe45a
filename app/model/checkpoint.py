"""Finding and reading a cde-small-v1 checkpoint: a local folder or a Hugging Face hub id.

Loading is strict: every missing key, unexpected key and shape mismatch is named, and
nothing is loaded partially.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.errors import ModelLoadError
from app.model.config import NOMIC_BERT_2048, BackboneConfig, CdeConfig
from app.model.network import DatasetTransformer

# Official key prefix → our module prefix. Our modules carry the official names, so this is
# the identity today; if a published file spells a prefix differently, it changes here only.
KEY_PREFIXES: dict[str, str] = {
    "first_stage_model.embedder.": "first_stage_model.embedder.",
    "first_stage_model.mlp.": "first_stage_model.mlp.",
    "second_stage_model.backbone.": "second_stage_model.backbone.",
    "second_stage_model.prompt_projection.": "second_stage_model.prompt_projection.",
    "second_stage_model.output_projection.": "second_stage_model.output_projection.",
}
# Keys a checkpoint may carry that the forward does not use (training-only values, cached
# rotary tables). Anything else unexpected is an error.
IGNORED_KEYS = re.compile(r"(^|\.)(logit_scale|rotary_emb\.inv_freq|position_ids)$")

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HUB_FILES = [
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "random_strings.txt",
]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_checkpoint(path_or_hub_id: str | os.PathLike[str]) -> Path:
    """A local folder as is; a hub id ("owner/name") downloaded to the HF cache."""
    local = Path(path_or_hub_id).expanduser()
    if local.is_dir():
        return local
    name = str(path_or_hub_id)
    if not _HUB_ID.match(name) or local.exists():
        raise ModelLoadError(
            f"model {name!r}: no such folder, and not a Hugging Face hub id (owner/name)"
        )
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo_id=name, allow_patterns=HUB_FILES)
    except Exception as exc:  # any download failure means the same thing to the user
        raise ModelLoadError(
            f"could not fetch {name!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            "Without network access, download the checkpoint elsewhere and point cdeq at the "
            "local folder (`--model DIR` or CDEQ_MODEL__NAME=DIR); for an offline try, "
            "`cdeq make-tiny-model DIR` writes a small random one."
        ) from exc
    return Path(folder)


def read_config(folder: Path) -> CdeConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder}: config.json is missing")
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc})") from exc
    return CdeConfig.from_dict(raw)


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(path))
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return dict(loaded.get("state_dict", loaded))
    raise ModelLoadError(f"{folder}: no weights ({' or '.join(WEIGHT_FILES)})")


def rename_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        for official, ours in KEY_PREFIXES.items():
            if key.startswith(official):
                key = ours + key[len(official) :]
                break
        out[key] = tensor
    return out


def _listing(title: str, items: Iterable[str]) -> str:
    items = list(items)
    return f"{title} ({len(items)}): " + ", ".join(items)


def build_model(
    cfg: CdeConfig, state: dict[str, torch.Tensor], *, dtype: torch.dtype, device: torch.device
) -> DatasetTransformer:
    """Construct on the meta device and assign the checkpoint's tensors key by key, so the
    weights exist once in memory (no random init, no second copy)."""
    with torch.device("meta"):
        model = DatasetTransformer(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    state = {k: v for k, v in rename_keys(state).items() if not IGNORED_KEYS.search(k)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k])})"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k])
    )
    if missing or unexpected or mismatched:
        parts = [
            _listing(title, items)
            for title, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", mismatched),
            )
            if items
        ]
        raise ModelLoadError("checkpoint does not match the model: " + "; ".join(parts))
    converted = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    state.clear()
    model.load_state_dict(converted, strict=True, assign=True)
    model.eval().requires_grad_(False)
    return model


def load_tokenizer(folder: Path) -> Any:
    """The folder's bert-style WordPiece tokenizer via `from_pretrained` (never `vocab_file=`: transformers 5
    ignores it and builds a 5-token vocabulary)."""
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    try:
        tok = BertTokenizerFast.from_pretrained(str(folder))
    except Exception as exc:
        raise ModelLoadError(f"{folder}: tokenizer could not be loaded ({exc})") from exc
    if len(tok) < 100:
        raise ModelLoadError(f"{folder}: tokenizer has only {len(tok)} tokens; files are broken")
    return tok


def save_checkpoint(model: nn.Module, cfg: CdeConfig, folder: Path) -> None:
    """Write weights and config in the official layout (tokenizer files are separate)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    reverse = {ours: official for official, ours in KEY_PREFIXES.items()}
    state: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        for ours, official in reverse.items():
            if key.startswith(ours):
                key = official + key[len(ours) :]
                break
        state[key] = tensor.detach().contiguous()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    raw = cfg.to_dict()
    if cfg.backbone == BackboneConfig.from_dict(NOMIC_BERT_2048):
        # The real architecture: name the embedder only, as the official config does.
        (folder / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
        return
    raw["backbone_config"] = {
        **cfg.backbone.to_dict(),
        "activation_function": "swiglu",
        "prenorm": False,
        "qkv_proj_bias": False,
        "mlp_fc1_bias": False,
        "mlp_fc2_bias": False,
        "pad_token_id": 0,
    }
    (folder / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
