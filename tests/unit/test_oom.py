"""CUDA out-of-memory: simulated on CPU (no GPU here) by a forward that raises
torch.OutOfMemoryError for batches over a size, as a full device would."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from app.errors import DeviceOutOfMemory
from app.model import CdeEmbedder
from tests.helpers.builders import cosine


def _ooming(real: Any, max_rows: int) -> Any:
    def forward(input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[0] > max_rows:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return real(input_ids, mask)

    return forward


def test_oom_splits_the_batch_and_every_vector_is_unchanged(embedder: CdeEmbedder) -> None:
    texts = [f"text number {i} about rivers and {'lakes ' * (i % 5)}" for i in range(24)]
    ids, _ = embedder.tokenize(texts, "search_document: ")
    reference = embedder._run(ids, _forward_of(embedder), 0, None)
    before = embedder.oom_splits
    split = embedder._run(ids, _ooming(_forward_of(embedder), 3), 0, None)
    assert embedder.oom_splits > before
    assert np.all(cosine(reference, split) > 0.99999)


def test_one_text_that_does_not_fit_fails_clearly(embedder: CdeEmbedder) -> None:
    ids, _ = embedder.tokenize(["one text", "two texts"], "search_document: ")
    with pytest.raises(DeviceOutOfMemory, match=r"does not fit .* even alone") as caught:
        embedder._run(ids, _ooming(_forward_of(embedder), 0), 0, None)
    assert caught.value.retry_after_s > 0


def _forward_of(embedder: CdeEmbedder) -> Any:
    """Stage 1's real forward, as `embed_context` runs it."""
    return embedder.model.first_stage_model
