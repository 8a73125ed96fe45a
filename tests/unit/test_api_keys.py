"""Scoped API keys (docs/api-keys.md) over the real app: the tiny model, a local Qdrant folder,
in-process jobs. The matrix sends every keyed route with each key to each of three collections
and compares the whole table of statuses with the documented one."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.api import create_app
from app.config import ApiKey, ApiSettings, Settings, load_settings
from app.errors import InvalidInput, NotFound
from app.ingest import ingest_documents
from app.lifecycle import drop_collection
from app.logs import JsonFormatter, RequestIdFilter, TextFormatter
from app.service import Cdeq
from tests.helpers.builders import assert_error, corpus

READER = "reader-key-7c1f0e5a9b2d4c6e8f0a1b2c3d4e5f60"
WRITER = "writer-key-0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f50"
ADMIN = "admin-key-3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d"
LEGACY = "legacy-key-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
ADMIN_SHA = hashlib.sha256(ADMIN.encode()).hexdigest()
SECRETS = (READER, WRITER, ADMIN, LEGACY, ADMIN_SHA)

KEYS: list[Any] = [
    {"name": "support-reader", "key": READER, "access": "read", "collections": ["support"]},
    {"name": "kb-writer", "key": WRITER, "access": "write", "collections": ["kb-*"]},
    {"name": "ops-admin", "sha256": ADMIN_SHA, "access": "admin"},  # configured by hash only
    LEGACY,  # a plain key: today's meaning, everything on every collection
]
COLLECTIONS = ("support", "kb-docs", "legal")
CALLERS = {  # row label → Authorization header (None: no header)
    "reader": f"Bearer {READER}",
    "writer": f"Bearer {WRITER}",
    "admin": f"Bearer {ADMIN}",
    "legacy": f"Bearer {LEGACY}",
    "nokey": None,
    "badkey": "Bearer not-a-configured-key-00000000000000000",
}


def keyed_settings(service: Cdeq, keys: list[Any] | None = None) -> Settings:
    settings = service.settings.model_copy(deep=True)
    settings.api = ApiSettings.model_validate({"keys": KEYS if keys is None else keys})
    return settings


@pytest.fixture(scope="module")
def app_client(api_service: Cdeq) -> Iterator[TestClient]:
    with TestClient(create_app(keyed_settings(api_service), api_service)) as c:
        yield c


def fresh(service: Cdeq, collection: str) -> str:
    """``collection`` as new: 12 documents, context v1; returns the id of its ingest job."""
    for name in (collection, f"{collection}-2"):
        with contextlib.suppress(NotFound):
            drop_collection(name, service=service)
    return ingest_documents(collection, corpus(12, topic=collection), service=service).id


@dataclass(frozen=True)
class Route:
    label: str
    method: str
    path: str  # {c}: the collection, {job}: a job of the collection
    body: dict[str, Any] | None = None


DOC = {"documents": [{"id": "extra", "text": "one more document for the matrix"}]}
ROUTES = [  # in this order: reads, then the routes that change the collection
    Route("models", "GET", "/v1/models"),
    Route("model", "GET", "/v1/models/cde-small-v1"),
    Route("info", "GET", "/info"),
    Route("embeddings", "POST", "/v1/embeddings", {"input": "hello"}),
    Route("embeddings+c", "POST", "/v1/embeddings", {"input": "hello", "collection": "{c}"}),
    Route("embed", "POST", "/embed", {"inputs": "hello"}),
    Route("embed+c", "POST", "/embed", {"inputs": "hello", "collection": "{c}"}),
    Route("list", "GET", "/v1/collections"),
    Route("search", "POST", "/v1/collections/{c}/search", {"text": "river", "top_k": 2}),
    Route("context", "GET", "/v1/collections/{c}/context"),
    Route("job", "GET", "/v1/jobs/{job}"),
    Route("ingest", "POST", "/v1/collections/{c}/documents", DOC),
    Route("delete-docs", "DELETE", "/v1/collections/{c}/documents", {"ids": ["extra"]}),
    Route("create", "POST", "/v1/collections/{c}-2/documents", DOC),
    Route("rebuild", "POST", "/v1/collections/{c}/context/rebuild"),
    Route("rollback", "POST", "/v1/collections/{c}/context/rollback"),
    Route("prune", "POST", "/v1/collections/{c}/context/prune"),
    Route("drop", "DELETE", "/v1/collections/{c}"),
]

CHANGES = frozenset({"ingest", "delete-docs", "create", "rebuild", "rollback", "prune", "drop"})

# The documented statuses (docs/api-keys.md): reader = read on `support`, writer = write on
# `kb-*`, admin = admin on all (by hash), legacy = a plain key; nokey/badkey: 401 everywhere.
# Out of scope → 404; in scope but above the key's access → 403; creating needs admin.
EXPECTED = """
route         collection  reader writer admin legacy nokey badkey
models        support     200    200    200   200    401   401
models        kb-docs     200    200    200   200    401   401
models        legal       200    200    200   200    401   401
model         support     200    200    200   200    401   401
model         kb-docs     200    200    200   200    401   401
model         legal       200    200    200   200    401   401
info          support     200    200    200   200    401   401
info          kb-docs     200    200    200   200    401   401
info          legal       200    200    200   200    401   401
embeddings    support     200    200    200   200    401   401
embeddings    kb-docs     200    200    200   200    401   401
embeddings    legal       200    200    200   200    401   401
embeddings+c  support     200    404    200   200    401   401
embeddings+c  kb-docs     404    200    200   200    401   401
embeddings+c  legal       404    404    200   200    401   401
embed         support     200    200    200   200    401   401
embed         kb-docs     200    200    200   200    401   401
embed         legal       200    200    200   200    401   401
embed+c       support     200    404    200   200    401   401
embed+c       kb-docs     404    200    200   200    401   401
embed+c       legal       404    404    200   200    401   401
list          support     200    200    200   200    401   401
list          kb-docs     200    200    200   200    401   401
list          legal       200    200    200   200    401   401
search        support     200    404    200   200    401   401
search        kb-docs     404    200    200   200    401   401
search        legal       404    404    200   200    401   401
context       support     200    404    200   200    401   401
context       kb-docs     404    200    200   200    401   401
context       legal       404    404    200   200    401   401
job           support     200    404    200   200    401   401
job           kb-docs     404    200    200   200    401   401
job           legal       404    404    200   200    401   401
ingest        support     403    404    200   200    401   401
ingest        kb-docs     404    200    200   200    401   401
ingest        legal       404    404    200   200    401   401
delete-docs   support     403    404    200   200    401   401
delete-docs   kb-docs     404    200    200   200    401   401
delete-docs   legal       404    404    200   200    401   401
create        support     404    404    200   200    401   401
create        kb-docs     404    403    200   200    401   401
create        legal       404    404    200   200    401   401
rebuild       support     403    404    200   200    401   401
rebuild       kb-docs     404    403    200   200    401   401
rebuild       legal       404    404    200   200    401   401
rollback      support     403    404    200   200    401   401
rollback      kb-docs     404    403    200   200    401   401
rollback      legal       404    404    200   200    401   401
prune         support     403    404    200   200    401   401
prune         kb-docs     404    403    200   200    401   401
prune         legal       404    404    200   200    401   401
drop          support     403    404    200   200    401   401
drop          kb-docs     404    403    200   200    401   401
drop          legal       404    404    200   200    401   401
"""


def table(cells: dict[tuple[str, str, str], int]) -> str:
    lines = ["route         collection  " + " ".join(f"{c:<6}" for c in CALLERS).rstrip()]
    for route in ROUTES:
        for collection in COLLECTIONS:
            statuses = [str(cells[(route.label, collection, caller)]) for caller in CALLERS]
            row = f"{route.label:<13} {collection:<11} " + " ".join(f"{s:<6}" for s in statuses)
            lines.append(row.rstrip())
    return "\n".join(lines)


def _normalized(text: str) -> str:
    return "\n".join(" ".join(line.split()) for line in text.strip().splitlines())


def _fill(value: Any, collection: str, job: str) -> Any:
    if isinstance(value, str):
        return value.replace("{c}", collection).replace("{job}", job)
    if isinstance(value, dict):
        return {k: _fill(v, collection, job) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, collection, job) for v in value]
    return value


@pytest.fixture(scope="module")
def matrix(app_client: TestClient, api_service: Cdeq) -> dict[str, Any]:
    """Every route × every caller × every collection, each (caller, collection) on a fresh
    collection so the routes that change it see the same starting state. Keeps every body."""
    cells: dict[tuple[str, str, str], int] = {}
    bodies: list[str] = []
    jobs: dict[str, str] = {}  # collection → its ingest job, while nothing changed it since
    for caller, header in CALLERS.items():
        headers = {"Authorization": header} if header else {}
        for collection in COLLECTIONS:
            if collection not in jobs:
                jobs[collection] = fresh(api_service, collection)
            job = jobs[collection]
            for route in ROUTES:
                r = app_client.request(
                    route.method,
                    _fill(route.path, collection, job),
                    json=_fill(route.body, collection, job),
                    headers=headers,
                )
                cells[(route.label, collection, caller)] = r.status_code
                bodies.append(r.text)
                if r.status_code >= 400:
                    assert_error(r, r.status_code)  # every refusal has the error shape
                elif route.label in CHANGES:
                    jobs.pop(collection, None)  # changed: the next caller gets it fresh
    for collection in COLLECTIONS:
        fresh(api_service, collection)
    return {"cells": cells, "bodies": bodies}


@pytest.mark.slow
def test_every_route_every_key_every_collection(matrix: dict[str, Any]) -> None:
    got = table(matrix["cells"])
    assert _normalized(got) == _normalized(EXPECTED), "\n" + got


def test_refusals_say_why_without_leaking(app_client: TestClient) -> None:
    reader = {"Authorization": f"Bearer {READER}"}
    writer = {"Authorization": f"Bearer {WRITER}"}
    hidden = assert_error(app_client.get("/v1/collections/legal/context", headers=reader), 404)
    missing = assert_error(app_client.get("/v1/collections/nope/context", headers=None), 401)
    assert missing["code"] == "invalid_api_key"
    # Out of scope reads exactly like a collection that does not exist (admin asks for one).
    admin = {"Authorization": f"Bearer {ADMIN}"}
    absent = assert_error(app_client.get("/v1/collections/no-such/context", headers=admin), 404)
    assert hidden["message"].replace("legal", "X") == absent["message"].replace("no-such", "X")
    forbidden = assert_error(
        app_client.post("/v1/collections/support/context/prune", headers=reader), 403
    )
    assert forbidden["code"] == "insufficient_permissions"
    assert "'support-reader' has read access" in forbidden["message"]
    assert "needs admin" in forbidden["message"]
    create = assert_error(
        app_client.post("/v1/collections/kb-new/documents", json=DOC, headers=writer), 403
    )
    assert "creating a collection needs an admin key" in create["message"]
    # In the glob but never a valid name: the route's own 400, not a refused creation.
    bad = app_client.post("/v1/collections/kb-BAD/documents", json=DOC, headers=writer)
    assert_error(bad, 400)


def test_listing_shows_only_the_keys_collections(app_client: TestClient, api_service: Cdeq) -> None:
    for collection in COLLECTIONS:
        fresh(api_service, collection)

    def names(secret: str) -> list[str]:
        r = app_client.get("/v1/collections", headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 200, r.text
        return sorted(c["name"] for c in r.json()["data"])

    assert names(READER) == ["support"]
    assert names(WRITER) == ["kb-docs"]
    assert names(ADMIN) == sorted(COLLECTIONS)
    assert names(LEGACY) == sorted(COLLECTIONS)


def test_a_job_of_another_collection_is_not_found(
    app_client: TestClient, api_service: Cdeq
) -> None:
    legal_job = fresh(api_service, "legal")
    reader = {"Authorization": f"Bearer {READER}"}
    hidden = assert_error(app_client.get(f"/v1/jobs/{legal_job}", headers=reader), 404)
    unknown = assert_error(app_client.get("/v1/jobs/no-such-job", headers=reader), 404)
    assert hidden["message"].replace(legal_job, "X") == unknown["message"].replace(
        "no-such-job", "X"
    )
    assert app_client.get(f"/v1/jobs/{legal_job}", headers={"Authorization": f"Bearer {ADMIN}"})
    support_job = fresh(api_service, "support")
    mine = app_client.get(f"/v1/jobs/{support_job}", headers=reader)
    assert mine.status_code == 200 and mine.json()["collection"] == "support"


def test_a_hash_only_key_works(api_service: Cdeq) -> None:
    only = [{"name": "hashed", "sha256": ADMIN_SHA.upper(), "access": "read"}]
    with TestClient(create_app(keyed_settings(api_service, only), api_service)) as c:
        ok = c.post(
            "/v1/embeddings", json={"input": "x"}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert ok.status_code == 200, ok.text
        assert_error(
            c.post(
                "/v1/embeddings",
                json={"input": "x"},
                headers={"Authorization": f"Bearer {ADMIN_SHA}"},
            ),
            401,
        )  # the hash itself is not a key
        assert_error(
            c.post(
                "/v1/collections/support/documents",
                json=DOC,
                headers={"Authorization": f"Bearer {ADMIN}"},
            ),
            403,
        )


@pytest.mark.slow
def test_keys_never_appear_in_logs_metrics_bodies_or_jobs(
    app_client: TestClient, api_service: Cdeq, matrix: dict[str, Any]
) -> None:
    handler = logging.StreamHandler()
    records: list[str] = []
    handler.emit = lambda record: records.append(handler.format(record))  # type: ignore[method-assign]
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    text_handler = logging.StreamHandler()  # the default format names the key too
    text_records: list[str] = []
    text_handler.emit = lambda record: text_records.append(text_handler.format(record))  # type: ignore[method-assign]
    text_handler.setFormatter(TextFormatter())
    text_handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.addHandler(text_handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        for secret in (READER, WRITER, ADMIN, LEGACY):
            headers = {"Authorization": f"Bearer {secret}"}
            app_client.get("/v1/collections/legal/context", headers=headers)
            app_client.post("/v1/collections/support/context/prune", headers=headers)
            app_client.post("/v1/collections/kb-docs/documents", json=DOC, headers=headers)
    finally:
        root.removeHandler(handler)
        root.removeHandler(text_handler)
        root.setLevel(old_level)
    assert any("key=support-reader" in line for line in text_records)
    logs = "\n".join(records + text_records)
    assert '"api_key": "support-reader"' in logs  # the log names the key by its name
    metrics = app_client.get("/metrics").text
    assert 'cdeq_auth_refusals_total{key="support-reader",status="404"}' in metrics
    assert 'cdeq_auth_refusals_total{key="support-reader",status="403"}' in metrics
    assert 'cdeq_auth_refusals_total{key="kb-writer",status="404"}' in metrics
    assert 'cdeq_auth_refusals_total{key="(missing)",status="401"}' in metrics
    assert 'cdeq_auth_refusals_total{key="(invalid)",status="401"}' in metrics
    assert 'cdeq_api_key_requests_total{key="CDEQ_API__KEYS[3]"}' in metrics  # the plain key
    jobs = [api_service.jobs.status(fresh(api_service, c)).to_dict() for c in COLLECTIONS]
    records_text = json.dumps(jobs) + json.dumps(vars(api_service.jobs), default=str)
    bodies = "\n".join(matrix["bodies"])
    for where, text in (
        ("logs", logs),
        ("metrics", metrics),
        ("bodies", bodies),
        ("jobs", records_text),
    ):
        for secret in SECRETS:
            assert secret not in text, f"a key or its hash in the {where}"


def test_cdeq_config_shows_names_and_scopes_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from app import cli

    _clean_env(monkeypatch, tmp_path)
    monkeypatch.setenv("CDEQ_API__KEYS", json.dumps(KEYS))
    monkeypatch.setenv("CDEQ_API__READ_ONLY_KEYS", f"{READER}-ro")
    assert cli.main(["config", "--json"]) == 0
    out, err = capsys.readouterr()
    values = json.loads(out)
    assert values["CDEQ_API__KEYS"] == [
        {
            "name": "support-reader",
            "access": "read",
            "collections": ["support"],
            "stored_as": "key",
        },
        {"name": "kb-writer", "access": "write", "collections": ["kb-*"], "stored_as": "key"},
        {"name": "ops-admin", "access": "admin", "collections": ["*"], "stored_as": "sha256"},
        {"name": "CDEQ_API__KEYS[3]", "access": "admin", "collections": ["*"], "stored_as": "key"},
    ]
    assert values["CDEQ_API__READ_ONLY_KEYS"] == [
        {
            "name": "CDEQ_API__READ_ONLY_KEYS[0]",
            "access": "read",
            "collections": ["*"],
            "stored_as": "key",
        }
    ]
    assert cli.main(["config"]) == 0
    out += "".join(capsys.readouterr())
    for secret in SECRETS:
        assert secret not in out + err


def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("CDEQ_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env of the repository


# ---- configuration mistakes ------------------------------------------------------------------
SHA = "ab" * 32


@pytest.mark.parametrize(
    ("value", "problems"),
    [
        (
            [{"name": "a", "key": "k", "acces": "read"}],
            [
                "CDEQ_API__KEYS[0].access: Field required",
                "CDEQ_API__KEYS[0].acces: unknown field; an API key object has name, key, "
                "sha256, access, collections",
            ],
        ),
        (
            [{"name": "a", "sha256": "xyz", "access": "root"}],
            [
                "CDEQ_API__KEYS[0].sha256: must be 64 hex digits (`cdeq keys hash` prints it)",
                "CDEQ_API__KEYS[0].access: Input should be 'read', 'write' or 'admin'",
            ],
        ),
        (
            [{"name": "a", "key": "k", "access": "read", "collections": ["Legal", "kb-[x"]}],
            [
                "CDEQ_API__KEYS[0].collections: 'Legal' is not a collection glob: use 1-100 of "
                "the characters of collection names (lower-case letters, digits, '_', '-') and "
                "'*', '?', '[...]'; 'kb-[x': an unclosed or empty '[...]' class"
            ],
        ),
        (
            [{"name": "a", "key": "k", "access": "read", "collections": []}],
            [
                "CDEQ_API__KEYS[0].collections: empty list: give at least one pattern, or omit "
                "it for every collection"
            ],
        ),
        (
            [{"name": "a", "key": "k", "sha256": SHA, "access": "read"}],
            ["CDEQ_API__KEYS[0]: key 'a': give exactly one of 'key' or 'sha256'"],
        ),
        (
            [{"name": "a b", "access": "read", "sha256": SHA}],
            [
                "CDEQ_API__KEYS[0].name: a key name is 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            ],
        ),
        (
            [7],
            [
                'CDEQ_API__KEYS[0]: must be a key (a string) or an object {"name", "key" or '
                '"sha256", "access", "collections"?}'
            ],
        ),
    ],
)
def test_bad_key_entries_are_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: Any, problems: list[str]
) -> None:
    _clean_env(monkeypatch, tmp_path)
    monkeypatch.setenv("CDEQ_API__KEYS", json.dumps(value))
    with pytest.raises(InvalidInput) as err:
        load_settings()
    assert err.value.problems == problems
    assert "k" not in [p.split(": ", 1)[-1] for p in err.value.problems]


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("abc123", ["abc123"]),  # a bare key: one plain key
        ("k1,k2", ["k1", "k2"]),
        (" k1 , k2 ", ["k1", "k2"]),
        ('["k1"]', ["k1"]),
        ("", []),
    ],
)
def test_keys_variable_takes_json_or_commas(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, raw: str, want: list[str]
) -> None:
    _clean_env(monkeypatch, tmp_path)
    monkeypatch.setenv("CDEQ_API__KEYS", raw)
    monkeypatch.setenv("CDEQ_API__READ_ONLY_KEYS", raw)
    api = load_settings().api
    assert [k.get_secret_value() for k in api.keys] == want  # type: ignore[union-attr]
    assert [k.get_secret_value() for k in api.read_only_keys] == want


@pytest.mark.parametrize("raw", ["[abc", "k1,,k2", '{"k": 1'])
def test_keys_variable_neither_json_nor_commas_exits_2(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    raw: str,
) -> None:
    from app import cli

    _clean_env(monkeypatch, tmp_path)
    monkeypatch.setenv("CDEQ_API__KEYS", raw)
    assert cli.main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: CDEQ_API__KEYS: ") and "key1,key2" in err, err


def test_duplicate_names_and_keys_are_refused(api_service: Cdeq) -> None:
    twice = [
        {"name": "a", "key": READER, "access": "read"},
        {"name": "a", "key": WRITER, "access": "write"},
        {"name": "b", "sha256": hashlib.sha256(READER.encode()).hexdigest(), "access": "admin"},
    ]
    with pytest.raises(InvalidInput) as err:
        create_app(keyed_settings(api_service, twice), api_service)
    assert err.value.problems == [
        "a: 2 keys have this name",
        "b: the same key as a (one key, one entry)",
    ]


def test_cli_keys_hash_makes_an_entry_that_works(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], api_service: Cdeq
) -> None:
    import io

    from app import cli

    monkeypatch.setattr("sys.stdin", io.StringIO(WRITER + "\n"))
    assert (
        cli.main(["keys", "hash", "--name", "team", "--access", "write", "--collection", "kb-*"])
        == 0
    )
    out, err = capsys.readouterr()
    entry = json.loads(out)
    assert entry == {
        "name": "team",
        "sha256": hashlib.sha256(WRITER.encode()).hexdigest(),
        "access": "write",
        "collections": ["kb-*"],
    }
    assert WRITER not in out + err and not err  # a strong key: no warning
    ApiKey.model_validate(entry)
    with TestClient(create_app(keyed_settings(api_service, [entry]), api_service)) as c:
        r = c.get("/v1/collections", headers={"Authorization": f"Bearer {WRITER}"})
        assert r.status_code == 200, r.text
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["keys", "hash"]) == 0
    assert "fewer than 32" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert cli.main(["keys", "hash"]) == 2
    assert "empty" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(WRITER))
    assert cli.main(["keys", "hash", "--collection", "Bad["]) == 2
    assert "--collection: 'Bad[' is not a collection glob" in capsys.readouterr().err


def test_cli_keys_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from app import cli

    _clean_env(monkeypatch, tmp_path)
    monkeypatch.setenv("CDEQ_API__KEYS", json.dumps(KEYS))
    assert cli.main(["keys", "check", "--host", "0.0.0.0"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "support-reader: read on support (stored as key)",
        "kb-writer: write on kb-* (stored as key)",
        "ops-admin: admin on * (stored as sha256, so its strength is not checked)",
        "CDEQ_API__KEYS[3]: admin on * (stored as key)",
        "ok: 4 key(s)",
    ]
    bad = [
        {"name": "a", "key": "short", "access": "read"},
        {"name": "a", "key": "change-me-openssl-rand-hex-32-xxxxxx", "access": "read"},
    ]
    monkeypatch.setenv("CDEQ_API__KEYS", json.dumps(bad))
    assert cli.main(["keys", "check", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: 3 problems:",
        "  a: 2 keys have this name",
        "  a: 5 characters, fewer than 32 (generate one: openssl rand -hex 32); refused when "
        "serving on 0.0.0.0 (not loopback)",
        "  a: a placeholder, not a secret (generate one: openssl rand -hex 32); refused when "
        "serving on 0.0.0.0 (not loopback)",
    ]
    assert "short" not in err.replace("fewer", "")
    monkeypatch.setenv("CDEQ_API__KEYS", json.dumps([{"name": "a", "kee": "x", "access": "read"}]))
    assert cli.main(["keys", "check"]) == 2
    assert "CDEQ_API__KEYS[0].kee: unknown field" in capsys.readouterr().err


def test_read_only_keys_keep_working(api_service: Cdeq) -> None:
    settings = api_service.settings.model_copy(deep=True)
    settings.api = ApiSettings(keys=[SecretStr(LEGACY)], read_only_keys=[SecretStr(READER)])
    with TestClient(create_app(settings, api_service)) as c:
        ro = {"Authorization": f"Bearer {READER}"}
        for collection in COLLECTIONS:
            fresh(api_service, collection)
            r = c.post(f"/v1/collections/{collection}/search", json={"text": "x"}, headers=ro)
            assert r.status_code == 200, r.text
            assert_error(
                c.post(f"/v1/collections/{collection}/documents", json=DOC, headers=ro), 403
            )
