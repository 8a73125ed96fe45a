"""The values the embedder takes and gives: texts, contexts (and how they are sampled), devices
and dtypes, and the stage-2 output — with the checks that turn a bad one into InvalidInput."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from app.errors import InvalidInput

T = TypeVar("T")
Progress = Callable[[int, int], None]


def sample_context(corpus: Sequence[T], n: int, seed: int = 0) -> list[T]:
    """Exactly `n` items of `corpus` for a stage-1 context, reproducibly for a given seed.

    - exactly n items: all of them, in order;
    - more: a seeded sample without replacement;
    - fewer: with replacement, balanced — every item appears ⌊n/len⌋ or ⌈n/len⌉ times, so
      no document is left out by chance (the remainder is drawn without replacement).
    """
    if n <= 0:
        raise InvalidInput(f"context size must be positive, got {n}", field="n")
    if len(corpus) == 0:
        raise InvalidInput("context corpus is empty: at least one text is needed", field="corpus")
    rng = random.Random(seed)
    if len(corpus) == n:
        return list(corpus)
    if len(corpus) > n:
        return [corpus[i] for i in sorted(rng.sample(range(len(corpus)), n))]
    copies, remainder = divmod(n, len(corpus))
    picked = list(range(len(corpus))) * copies + rng.sample(range(len(corpus)), remainder)
    return [corpus[i] for i in picked]


@dataclass(frozen=True)
class Embeddings:
    """Stage-2 output: unit-norm float32 vectors and, per text, what the model saw."""

    vectors: np.ndarray  # (n, D) float32, L2-normalized
    token_counts: list[int]  # tokens embedded per text ([CLS]/[SEP] and prefix included)
    truncated: list[bool]  # True where the text was cut at max_seq_length tokens

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.vectors.shape)

    def __len__(self) -> int:
        return len(self.vectors)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.vectors if dtype is None else self.vectors.astype(dtype)


def parse_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def parse_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InvalidInput(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}", field="dtype")
    return DTYPES[dtype]


def check_texts(texts: Sequence[str], field: str = "texts") -> None:
    """A list of non-blank strings, or InvalidInput naming every bad item."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InvalidInput(
            f"{field} must be a list of strings, got {type(texts).__name__}", field=field
        )
    problems = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            problems.append(f"{field}[{i}]: must be a string, got {type(text).__name__}")
        elif not text.strip():
            problems.append(f"{field}[{i}]: is empty or whitespace-only")
        elif not valid_unicode(text):
            problems.append(f"{field}[{i}]: not valid Unicode (lone surrogate)")
    if problems:
        raise InvalidInput(problems, field=field)


def valid_unicode(text: str) -> bool:
    """False for a lone surrogate (\\ud800-\\udfff: an invalid byte read with Python's
    surrogateescape, or a JSON escape), which no tokenizer, Redis or Qdrant can take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def dataset_tensor(
    dataset_embeddings: Any, expected: tuple[int, int], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Validate `expected`-shaped (context_size, D) floating, finite dataset embeddings (a
    numpy array or torch tensor from `embed_context`); on `device` in `dtype`."""
    if isinstance(dataset_embeddings, np.ndarray):
        if not np.issubdtype(dataset_embeddings.dtype, np.floating):
            raise InvalidInput(
                f"dataset_embeddings must be floating point, got dtype {dataset_embeddings.dtype}",
                field="dataset_embeddings",
            )
        tensor = torch.from_numpy(np.ascontiguousarray(dataset_embeddings))
    elif isinstance(dataset_embeddings, torch.Tensor):
        if not dataset_embeddings.is_floating_point():
            raise InvalidInput(
                f"dataset_embeddings must be floating point, got dtype {dataset_embeddings.dtype}",
                field="dataset_embeddings",
            )
        tensor = dataset_embeddings.detach()
    else:
        raise InvalidInput(
            "dataset_embeddings must be a numpy array or torch tensor from embed_context, "
            f"got {type(dataset_embeddings).__name__}",
            field="dataset_embeddings",
        )
    if tuple(tensor.shape) != expected:
        raise InvalidInput(
            f"dataset_embeddings must have shape {expected} (context_size, dim), "
            f"got {tuple(tensor.shape)}",
            field="dataset_embeddings",
        )
    if not bool(torch.isfinite(tensor).all()):
        raise InvalidInput("dataset_embeddings contain NaN or infinity", field="dataset_embeddings")
    return tensor.to(device=device, dtype=dtype)
