"""Invalid Unicode (a lone surrogate: an invalid byte read by Python's surrogateescape, or a
JSON escape) in any text given to search or embed is InvalidInput naming the field, in Python
and on the command line (exit 2), as it already is for documents."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.config import Settings
from app.embeddings import input_types
from app.errors import InvalidInput
from app.model import CdeEmbedder
from app.query import search
from app.service import Cdeq
from tests.helpers.builders import ROOT

BAD = "caf\udcc3 query"  # b"caf\xc3 query" read with surrogateescape, as argv is


def test_search_names_the_text_field(tiny_model_dir: Path, embedder: CdeEmbedder) -> None:
    svc = Cdeq(
        Settings(model={"name": str(tiny_model_dir)}, qdrant={"path": ":memory:"}),
        embedder=embedder,
    )
    try:
        with pytest.raises(InvalidInput, match=r"^text: not valid Unicode") as err:
            search("papers", BAD, service=svc)
        assert err.value.field == "text"
    finally:
        svc.close()


def test_every_model_entry_point_refuses_it(embedder: CdeEmbedder) -> None:
    dataset = np.zeros((embedder.context_size, embedder.dim), dtype=np.float32)
    for call in (
        lambda: embedder.embed_queries(["fine", BAD], dataset),
        lambda: embedder.embed_documents(["fine", BAD], dataset),
        lambda: embedder.embed_context(["fine", "also fine", BAD]),
    ):
        with pytest.raises(InvalidInput, match=r"texts\[\d\]: not valid Unicode") as err:
            call()
        assert err.value.field == "texts"


def test_embed_inputs_name_the_item() -> None:
    with pytest.raises(InvalidInput, match=r"input\[1\]: not valid Unicode") as err:
        input_types(["fine", "search_query: " + BAD])
    assert err.value.field == "input[1]"


def test_cli_search_with_an_invalid_byte_exits_2(tmp_path: Path, tiny_model_dir: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CDEQ_")}
    env = {
        **clean,
        "PYTHONPATH": str(ROOT),
        "CDEQ_MODEL__NAME": str(tiny_model_dir),
        "CDEQ_QDRANT__PATH": str(tmp_path / "qdrant"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "search", "papers", b"caf\xc3 query"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=120,
    )
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 2, stderr
    assert "text: not valid Unicode" in stderr and "Traceback" not in stderr
