"""Every code block of README.md, docs/*.md and clients/python/README.md marked runnable runs
as pasted, in document order, against a real `cdeq serve` (the tiny model, local Qdrant, an
API key) and with the `cdeq` command (see tests/helpers/runnable.py for the marker).

What the harness provides, as a reader's shell would have it: `KEY` and `CDEQ_API_KEY` hold
the server's key, `CDEQ_URL` its address; `http://127.0.0.1:8000` in a block is replaced by
the server's real address (a free port); `cdeq` and `python` are this checkout's; the working
directory is an empty folder with `examples/` from the repository; `curl` fails on an HTTP
error (`--fail-with-body`), so a refused request fails the block."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.builders import ROOT, Server, serve_process
from tests.helpers.runnable import NEEDS, Block, runnable_blocks, sources

pytestmark = pytest.mark.slow

KEY = secrets.token_hex(32)
DOCS_URL = "http://127.0.0.1:8000"
BLOCKS = [block for path in sources() for block in runnable_blocks(path)]


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("docs-server")
    env = {"CDEQ_QDRANT__PATH": str(tmp / "qdrant"), "CDEQ_API__KEYS": f'["{KEY}"]'}
    with serve_process(tiny_model_dir, tmp, env) as srv:
        yield srv


@pytest.fixture(scope="module")
def shell(server: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The reader's working folder and environment."""
    work = tmp_path_factory.mktemp("docs-work")
    (work / "examples").symlink_to(ROOT / "examples")
    bin_dir = tmp_path_factory.mktemp("docs-bin")
    for name, command in (
        ("cdeq", f'exec "{sys.executable}" -m app.cli "$@"'),
        ("python", f'exec "{sys.executable}" "$@"'),
        ("python3", f'exec "{sys.executable}" "$@"'),
    ):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{command}\n", encoding="utf-8")
        script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDEQ_", "PYTHON"))}
    env.update(
        {
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'clients' / 'python'}",
            "KEY": KEY,
            "CDEQ_API_KEY": KEY,
            "CDEQ_URL": server.url,
        }
    )
    return work, env


def test_the_docs_have_runnable_blocks() -> None:
    names = {b.path.name for b in BLOCKS if b.needs is None}
    assert {"README.md"} <= names and len([b for b in BLOCKS if b.needs is None]) >= 5


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_runnable_block(block: Block, server: Server, shell: tuple[Path, dict[str, str]]) -> None:
    if block.needs is not None:
        pytest.skip(f"{block.name} {NEEDS[block.needs]}")
    work, env = shell
    code = block.code.replace(DOCS_URL, server.url)
    if block.lang == "bash":
        prelude = 'set -eo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'
        command = ["bash", "-c", prelude + code]
    else:
        command = [sys.executable, "-c", code]
    run = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (
        f"{block.name} failed ({run.returncode}):\n{code}\n--- stdout\n{run.stdout}\n"
        f"--- stderr\n{run.stderr}\n--- server log (end)\n{server.output()[-3000:]}"
    )
