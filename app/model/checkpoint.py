"""Finding and reading a cde-small-v1/v2 checkpoint: a local folder or a Hugging Face hub id.

Loading is strict: every missing key, unexpected key and shape mismatch is named, and
nothing is loaded partially. v2 checkpoints on the hub carry neither the backbone's sizes
nor a tokenizer: both come from the repo their config names as `embedder`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.errors import ModelLoadError
from app.model.config import NOMIC_BERT_2048, BackboneConfig, CdeConfig, Family, detect_family
from app.model.modernbert import ContextualDocumentEmbeddingTransformer, V2Head
from app.model.network import DatasetTransformer
from app.model.stages import TwoStageModel

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
# What a v2 checkpoint takes from its `embedder` repo (answerdotai/ModernBERT-base).
EMBEDDER_FILES = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Bytes of each tensor's start and end that go into a fingerprint (see `fingerprint`).
FINGERPRINT_BYTES = 64


@dataclass(frozen=True)
class CheckpointFiles:
    """Where a checkpoint's parts are, and its configuration."""

    folder: Path  # config.json and the weights
    tokenizer_folder: Path  # the folder itself, or (v2 from the hub) the embedder repo's
    raw_config: dict[str, Any]  # config.json as written
    config: CdeConfig


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
    return _download(name, HUB_FILES)


def _download(repo_id: str, patterns: list[str]) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=repo_id, allow_patterns=patterns))
    except Exception as exc:  # any download failure means the same thing to the user
        raise ModelLoadError(
            f"could not fetch {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            "Without network access, download the checkpoint elsewhere and point cdeq at the "
            "local folder (`--model DIR` or CDEQ_MODEL__NAME=DIR); for an offline try, "
            "`cdeq make-tiny-model DIR` writes a small random one."
        ) from exc


def read_raw_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder}: config.json is missing")
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc})") from exc
    return raw


def read_config(folder: Path) -> CdeConfig:
    """The folder's configuration, without network access (a v2 folder without
    `backbone_config` gets ModernBERT-base's sizes from the built-in table)."""
    return CdeConfig.from_dict(read_raw_config(folder))


def has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file()


def locate_checkpoint(path_or_hub_id: str | os.PathLike[str]) -> CheckpointFiles:
    """Config, weights and tokenizer of a folder or hub id. A v2 hub checkpoint takes the
    backbone config (unless it has `backbone_config`) and the tokenizer (unless it ships one)
    from its `embedder` repo."""
    folder = resolve_checkpoint(path_or_hub_id)
    raw = read_raw_config(folder)
    from_hub = not Path(path_or_hub_id).expanduser().is_dir()
    tokenizer_folder, embedder_config = folder, None
    if detect_family(raw) == "v2" and from_hub:
        need_config = not raw.get("backbone_config")
        if need_config or not has_tokenizer(folder):
            embedder = _download(str(raw.get("embedder")), EMBEDDER_FILES)
            if need_config:
                embedder_config = read_raw_config(embedder)
            if not has_tokenizer(folder):
                tokenizer_folder = embedder
    config = CdeConfig.from_dict(raw, embedder_config=embedder_config)
    return CheckpointFiles(folder, tokenizer_folder, raw, config)


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


def fingerprint(config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> str:
    """A short hex digest of a checkpoint: its config (JSON, sorted keys) and each tensor's
    name, shape, dtype and first and last FINGERPRINT_BYTES bytes. Reads a page or two per
    tensor, so it is cheap on memory-mapped weights; stable across loads, devices and dtypes
    when computed on the file's tensors."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name in sorted(state):
        tensor = state[name]
        digest.update(f"\n{name} {tuple(tensor.shape)} {tensor.dtype}\n".encode())
        if tensor.is_meta or tensor.numel() == 0:
            continue
        flat = tensor.detach().reshape(-1)
        n = max(1, FINGERPRINT_BYTES // flat.element_size())
        for part in (flat[:n], flat[-n:]):
            digest.update(part.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def new_model(
    cfg: CdeConfig, *, v2_head: V2Head = "training", instruction_end_id: int | None = None
) -> TwoStageModel:
    """An untrained model of the config's family. `v2_head` and `instruction_end_id` (the
    colon's token id, for the training head) apply to v2 only."""
    if cfg.family == "v2":
        return ContextualDocumentEmbeddingTransformer(
            cfg, head=v2_head, instruction_end_id=instruction_end_id
        )
    return DatasetTransformer(cfg)


def build_model(
    cfg: CdeConfig,
    state: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype,
    device: torch.device,
    v2_head: V2Head = "training",
    instruction_end_id: int | None = None,
) -> TwoStageModel:
    """Construct on the meta device and assign the checkpoint's tensors key by key, so the
    weights exist once in memory (no random init, no second copy)."""
    with torch.device("meta"):
        model = new_model(cfg, v2_head=v2_head, instruction_end_id=instruction_end_id)
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
    model.materialize_buffers(device)
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:  # would compute garbage (NaN) rather than fail
        raise ModelLoadError(_listing("tensors left uninitialised after loading", left))
    model.eval().requires_grad_(False)
    return model


V2_TOKENIZER_HINT = (
    "cde-small-v2 ships no tokenizer: put answerdotai/ModernBERT-base's tokenizer files in the "
    "folder (`hf download answerdotai/ModernBERT-base tokenizer.json tokenizer_config.json "
    "special_tokens_map.json --local-dir DIR`)"
)


def load_tokenizer(folder: Path, family: Family = "v1") -> Any:
    """The folder's tokenizer via `from_pretrained`: v1 bert-style WordPiece (never
    `vocab_file=`: transformers 5 ignores it and builds a 5-token vocabulary), v2 ModernBERT's
    byte-level BPE from `tokenizer.json`."""
    if family == "v2" and not (folder / "tokenizer.json").is_file():
        raise ModelLoadError(f"{folder}: tokenizer.json is missing; {V2_TOKENIZER_HINT}")
    if family == "v2":
        from transformers import PreTrainedTokenizerFast as tokenizer_class
    else:
        from transformers import BertTokenizerFast as tokenizer_class  # type: ignore[attr-defined,no-redef]

    try:
        tok = tokenizer_class.from_pretrained(str(folder))
    except Exception as exc:
        raise ModelLoadError(f"{folder}: tokenizer could not be loaded ({exc})") from exc
    if len(tok) < 100:
        raise ModelLoadError(f"{folder}: tokenizer has only {len(tok)} tokens; files are broken")
    return tok


def check_v2_tokenizer(tokenizer: Any, cfg: CdeConfig, folder: Path) -> int:
    """Check that the tokenizer's special ids agree with the backbone config (a different
    tokenizer in the folder shows up here) and return the colon's id, where the training
    head's instruction ends (`tokenizer.encode(": ")[0]`, as the training code finds it)."""
    values = cfg.backbone.to_dict()
    for name in ("cls_token_id", "sep_token_id", "pad_token_id"):
        ours, theirs = getattr(tokenizer, name, None), values.get(name)
        if ours is None:
            raise ModelLoadError(f"{folder}: tokenizer has no {name.removesuffix('_id')} token")
        if theirs is not None and int(ours) != int(theirs):
            raise ModelLoadError(
                f"{folder}: tokenizer {name} is {ours} but the backbone config says {theirs}; "
                f"is this the backbone's tokenizer? {V2_TOKENIZER_HINT}"
            )
    colon = tokenizer.encode(": ", add_special_tokens=False)
    if not colon:
        raise ModelLoadError(f"{folder}: tokenizer encodes ': ' to nothing")
    return int(colon[0])


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
    if cfg.family == "v2":
        # Always spelled out: a random checkpoint's tokenizer ids differ from ModernBERT-base's.
        raw["backbone_config"] = {
            "architectures": ["ModernBertForMaskedLM"],
            **cfg.backbone.to_dict(),
        }
        (folder / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
        return
    if cfg.backbone == BackboneConfig.from_dict(NOMIC_BERT_2048):
        # The real architecture: name the embedder only, as the official config does.
        (folder / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
        return
    assert isinstance(cfg.backbone, BackboneConfig)
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
