"""Every operator mistake the issue lists ends in a clear message and the documented exit code,
never a traceback. The table runs `cdeq` in this process (an escaping exception would fail the
test itself); the cases that need a second process (a held folder, a busy port) run `cdeq` as
a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from app import cli
from app.config import QdrantSettings
from app.store import open_client
from tests.helpers.builders import cdeq

GOOD = '{"id": "a", "text": "a fine document"}\n'


@pytest.fixture()
def run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> object:
    """``run(*argv, env=...)`` -> (exit code, stderr), in ``tmp_path`` with only ``env`` set."""
    monkeypatch.chdir(tmp_path)

    def go(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        for name in [n for n in os.environ if n.startswith("CDEQ_")]:
            monkeypatch.delenv(name)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        code = cli.main(list(argv))
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        return code, err

    return go


def write(path: Path, content: bytes | str) -> str:
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return str(path)


def test_mistakes_table(run: object, tmp_path: Path) -> None:
    go = run  # type: ignore[assignment]
    ingest = ("ingest", "--collection", "c")
    cases: list[tuple[tuple[str, ...], dict[str, str], int, str]] = [
        ((*ingest, "missing.jsonl"), {}, 2, "cannot read 'missing.jsonl': No such file"),
        ((*ingest, str(tmp_path)), {}, 2, "Is a directory"),
        (
            (*ingest, write(tmp_path / "latin1.jsonl", b'{"id": "a", "text": "caf\xe9"}\n')),
            {},
            2,
            "line 1: not valid UTF-8 (bad byte at column 25)",
        ),
        (
            (
                *ingest,
                write(
                    tmp_path / "deep.jsonl",
                    GOOD
                    + '{"id": "b", "text": "t", "metadata": '
                    + "[" * 10_000
                    + "]" * 10_000
                    + "}\n",
                ),
            ),
            {},
            2,
            "line 2: not valid JSON: nested too deeply",
        ),
        (
            (
                *ingest,
                write(
                    tmp_path / "deep33.jsonl",
                    '{"id": "b", "text": "t", "metadata": '
                    + '{"a": ' * 33
                    + "{}"
                    + "}" * 33
                    + "}\n",
                ),
            ),
            {},
            2,
            "line 1: documents[0].metadata",
        ),
        (
            (
                *ingest,
                write(
                    tmp_path / "bigint.jsonl",
                    '{"id": "a", "text": "t", "metadata": {"n": ' + "7" * 5000 + "}}\n",
                ),
            ),
            {},
            2,
            "line 1: not valid JSON: an integer with 5000 digits",
        ),
        (
            (
                *ingest,
                write(
                    tmp_path / "int54.jsonl",
                    '{"id": "a", "text": "t", "metadata": {"n": ' + str(2**60) + "}}\n",
                ),
            ),
            {},
            2,
            "line 1: documents[0].metadata.n: integer out of the JSON-safe range",
        ),
        (
            (
                *ingest,
                write(tmp_path / "surrogate.jsonl", GOOD + '{"id": "id\\ud800", "text": "t"}\n'),
            ),
            {},
            2,
            "line 2: documents[1].id: 'id\\ud800' is not valid Unicode",
        ),
        (
            (*ingest, write(tmp_path / "many.jsonl", GOOD * 3)),
            {"CDEQ_INGEST__MAX_DOCUMENTS_PER_JOB": "2"},
            2,
            "more than 2 documents, the limit per job",
        ),
        (
            (
                *ingest,
                write(
                    tmp_path / "long.jsonl",
                    GOOD + '{"id": "x", "text": "' + "y" * 9000 + '"}\n' + GOOD,
                ),
            ),
            {"CDEQ_INGEST__MAX_TEXT_CHARS": "100", "CDEQ_INGEST__MAX_METADATA_BYTES": "100"},
            2,
            "line 2: longer than the limit of 4896 bytes",
        ),
        ((*ingest, write(tmp_path / "empty.jsonl", "\n\n")), {}, 2, "documents: empty"),
        (
            ("search", "c", "text", "--filter", "notjson"),
            {},
            2,
            "--filter: not valid JSON: Expecting value (column 1)",
        ),
        (
            ("create-collection", "c", "--context", "nope.txt"),
            {},
            2,
            "--context: cannot read 'nope.txt'",
        ),
        (
            ("make-tiny-model", str(tmp_path / "m"), "--vocab-corpus", "nope.txt"),
            {},
            2,
            "--vocab-corpus: cannot read",
        ),
        (
            ("collections",),
            {"CDEQ_API__PORT": "abc"},
            2,
            "CDEQ_API__PORT: Input should be a valid integer",
        ),
        (
            ("collections",),
            {"CDEQ_INGEST__TASK_TIME_LIMIT_S": "5"},
            2,
            "TASK_TIME_LIMIT_S (5) must exceed TASK_SOFT_TIME_LIMIT_S (900)",
        ),
        (
            ("collections",),
            {"CDEQ_LOG_LEVEL": "chatty"},
            2,
            "CDEQ_LOG_LEVEL: unknown level 'CHATTY'",
        ),
        (
            ("worker",),
            {"CDEQ_LOG__FORMAT": "xml"},
            2,
            "CDEQ_LOG__FORMAT: Input should be 'text' or 'json' (got 'xml')",
        ),
        (("status", "some-job"), {}, 5, "CDEQ_REDIS__URL"),
    ]
    for argv, env, code, message in cases:
        got, err = go(*argv, env=env)
        assert (got, message in err) == (code, True), (argv, got, err)


def test_json_and_document_problems_are_listed_together_by_line(
    run: object, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "mixed.jsonl",
        '\ufeff{"id": "a", "text": "t"}\n{"id": "b"}\n{oops\n\n{"id": "a", "text": "u"}\n',
    )
    code, err = run("ingest", path, "--collection", "c")  # type: ignore[operator]
    assert code == 2
    assert err.splitlines()[1:] == [
        "  line 2: documents[1].text: missing",
        "  line 3: not valid JSON: Expecting property name enclosed in double quotes (column 2)",
        "  line 5: documents[2].id: 'a' duplicates documents[0].id (line 1)",
    ]


def test_a_byte_order_mark_is_accepted(run: object, tmp_path: Path, tiny_model_dir: Path) -> None:
    path = write(tmp_path / "bom.jsonl", b"\xef\xbb\xbf" + GOOD.encode())
    code, err = run("ingest", path, "--collection", "c", "--model", str(tiny_model_dir), "--json")  # type: ignore[operator]
    assert code == 0, err


def test_unexpected_errors_are_one_line_unless_debug(
    run: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import app.query

    def broken(**_: object) -> None:
        raise RuntimeError("something deep broke\nsecond line")

    monkeypatch.setattr(app.query, "list_collections", broken)
    code, err = run("collections")  # type: ignore[operator]
    assert code == 1
    assert err.strip() == (
        "error: unexpected RuntimeError: something deep broke (run with --debug for the traceback)"
    )
    for argv in (["--debug", "collections"], ["collections", "--debug"]):
        with pytest.raises(RuntimeError, match="something deep broke"):
            cli.main(argv)


def test_unknown_settings_name_the_closest_valid_one(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CDEQ_INGEST__BATCH_SIZ=3\nCDEQ_IMAGE_TAG=v1\n")
    result = cdeq("config", cwd=tmp_path, env={"CDEQ_QDRANT__ULR": "http://qdrant:6333"})
    assert result.returncode == 0, result.stderr
    assert (
        "CDEQ_QDRANT__ULR (in the environment) is not a cdeq setting and is ignored: "
        "did you mean CDEQ_QDRANT__URL?" in result.stderr
    )
    assert "CDEQ_INGEST__BATCH_SIZ (in .env) is not a cdeq setting" in result.stderr
    assert "did you mean CDEQ_INGEST__BATCH_SIZE?" in result.stderr
    assert "CDEQ_IMAGE_TAG" not in result.stderr  # docker compose's variable, not a typo
    assert "CDEQ_QDRANT__URL=(unset)" in result.stdout  # the typo changed nothing


def test_config_prints_effective_settings_with_secrets_masked(
    run: object, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cret-" + "q" * 40
    (tmp_path / ".env").write_text(
        f"CDEQ_QDRANT__API_KEY={secret}\nCDEQ_API__PORT=9001\nCDEQ_API_KEYS='[\"compose-var\"]'\n"
    )
    for name in [n for n in os.environ if n.startswith("CDEQ_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CDEQ_API__KEYS", f'["{secret}"]')
    monkeypatch.chdir(tmp_path)
    assert cli.main(["config"]) == 0
    out, err = capsys.readouterr()
    assert "CDEQ_API__PORT=9001" in out  # from .env
    assert "CDEQ_QDRANT__API_KEY=**********" in out
    assert 'CDEQ_API__KEYS=[{"name": "CDEQ_API__KEYS[0]", "access": "admin"' in out
    assert "CDEQ_REDIS__URL=(unset)" in out
    assert secret not in out + err
    assert "CDEQ_API_KEYS" not in err  # a compose variable in .env, not a typo
    assert cli.main(["config", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["CDEQ_API__PORT"] == 9001


def test_held_local_folder_and_busy_port_exit_5(tmp_path: Path, tiny_model_dir: Path) -> None:
    client = open_client(QdrantSettings(path=str(tmp_path / "cdeq-data")))
    try:
        held = cdeq("collections", cwd=tmp_path)
    finally:
        client.close()
    assert held.returncode == 5, held.stderr
    assert "cdeq-data" in held.stderr and "Traceback" not in held.stderr

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        served = cdeq("serve", "--port", port, "--model", str(tiny_model_dir), cwd=tmp_path)
    assert served.returncode == 5, served.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the port is already in use" in served.stderr
    assert "Traceback" not in served.stderr


def test_python_api_exits_quietly_without_close(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A script that never closes its service must not print QdrantClient.__del__ noise."""
    script = tmp_path / "script.py"
    script.write_text(
        "from app.service import Cdeq\n"
        "from app.ingest import submit\n"
        f"svc = Cdeq.from_env(model={{'name': {str(tiny_model_dir)!r}, 'device': 'cpu'}})\n"
        "print(submit('c', [{'id': 'a', 'text': 'hello world'}], service=svc))\n"
    )
    import subprocess
    import sys

    from tests.helpers.builders import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("CDEQ_")}
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr
