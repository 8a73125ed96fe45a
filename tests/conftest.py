"""Shared fixtures: tiny random checkpoints made by the project itself, loaded once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.model import CdeEmbedder
from app.model.tiny import make_checkpoint

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "cde-v1-tiny"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint in the official layout (hidden 64, 2 layers, context 16)."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny-model"), size="tiny", seed=1)


@pytest.fixture(scope="session")
def embedder(tiny_model_dir: Path) -> CdeEmbedder:
    """One fp32 CPU embedder for the whole session; tests must not mutate it."""
    return CdeEmbedder.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")


@pytest.fixture()
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny checkpoint that a test may break."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
