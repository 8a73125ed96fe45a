"""What a newcomer ran into: a list setting written without JSON, abbreviated flags, a closed
pipe, Ctrl-C during an ingest, a plain-text file given to `ingest`, where the server's logs go."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.api.server import _logging_config
from app.cli import build_parser, main
from tests.helpers.builders import ROOT, cdeq


def test_a_key_list_that_is_neither_json_nor_comma_separated_names_the_variable(
    tmp_path: Path,
) -> None:
    result = cdeq("config", cwd=tmp_path, env={"CDEQ_API__KEYS": "[abc123"})
    assert result.returncode == 2, result.stderr
    assert "CDEQ_API__KEYS" in result.stderr
    assert "abc123" not in result.stderr  # a key is a secret: never echoed
    for value in ('["abc123"]', "abc123", "abc123,def456"):  # JSON, or plain keys with commas
        ok = cdeq("config", cwd=tmp_path, env={"CDEQ_API__KEYS": value})
        assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "papers", "a query", "--mode", "x"],  # once read as --model x
        ["ingest", "docs.jsonl", "--coll", "papers"],
        ["drop-collection", "papers", "--ye"],
    ],
)
def test_abbreviated_flags_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`cdeq config | head -0`: the reader is gone before anything is written."""
    read, write = os.pipe()
    os.close(read)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CDEQ_")}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "config"],
            cwd=tmp_path,
            env={**clean, "PYTHONPATH": str(ROOT)},
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert result.returncode == 0
    assert result.stderr == ""


def test_ctrl_c_during_an_ingest_says_what_was_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import app.ingest

    def interrupted(*_: object, on_progress: object = None, **__: object) -> str:
        on_progress(4, 10)  # type: ignore[operator]
        raise KeyboardInterrupt

    monkeypatch.setattr(app.ingest, "submit", interrupted)
    for name in [k for k in os.environ if k.startswith("CDEQ_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CDEQ_QDRANT__PATH", str(tmp_path / "qdrant"))
    monkeypatch.chdir(tmp_path)
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": f"text {i}"}) + "\n" for i in range(10))
    )
    assert main(["ingest", str(docs), "--collection", "papers"]) == 130
    err = capsys.readouterr().err
    assert "interrupted: 4 of 10 documents were stored" in err
    assert "running the same command again is safe" in err


def test_a_plain_text_file_given_to_ingest_says_jsonl_is_expected(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("some notes\nmore notes\n")
    result = cdeq("ingest", str(text), "--collection", "notes", cwd=tmp_path)
    assert result.returncode == 2
    assert "expected JSONL (one JSON object per line)" in result.stderr


def test_the_servers_access_log_goes_to_stderr() -> None:
    handlers = _logging_config()["handlers"]
    assert {h["stream"] for h in handlers.values()} == {"ext://sys.stderr"}
