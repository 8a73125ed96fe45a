"""The `cdeq` command line in in-process mode (no Redis, local storage), as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.builders import cdeq
from tests.helpers.texts import topical_texts


@pytest.fixture()
def docs_file(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    texts = topical_texts(60, seed=8)
    path.write_text(
        "".join(
            json.dumps({"id": f"d{i}", "text": t, "metadata": {"i": i}}) + "\n"
            for i, t in enumerate(texts)
        )
    )
    return path


def test_in_process_quick_start(tiny_model_dir: Path, docs_file: Path, tmp_path: Path) -> None:
    ingest = cdeq(
        "ingest",
        str(docs_file),
        "--collection",
        "notes",
        "--model",
        str(tiny_model_dir),
        "--json",
        cwd=tmp_path,
    )
    assert ingest.returncode == 0, ingest.stderr
    outcome = json.loads(ingest.stdout)
    assert (outcome["state"], outcome["succeeded"], outcome["total"]) == ("done", 60, 60)
    assert (tmp_path / "cdeq-data").is_dir()  # the default local storage folder

    text = json.loads(docs_file.read_text().splitlines()[3])["text"]
    found = cdeq(
        "search",
        "notes",
        text,
        "--top-k",
        "2",
        "--json",
        "--model",
        str(tiny_model_dir),
        cwd=tmp_path,
    )
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert len(hits) == 2 and hits[0]["id"] == "d3" and hits[0]["payload"]["metadata"] == {"i": 3}
    # each hit names its best chunk: a short document is its one chunk
    assert hits[0]["metadata"] == {"i": 3} and hits[0]["text"] == text
    assert [hits[0][k] for k in ("chunk_index", "chunk_count", "char_start", "char_end")] == [
        0,
        1,
        0,
        len(text),
    ]

    listed = cdeq("collections", "--json", cwd=tmp_path)
    assert json.loads(listed.stdout) == [
        {
            "name": "notes",
            "documents": 60,
            "points": 60,
            "context_version": 1,
            "physical": "notes__c1",
            "sparse": True,
        }
    ]


def test_bad_lines_are_all_reported_and_nothing_stored(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "text": "fine"}\n{not json}\n{"id": "b"}\n\n[1, 2\n')
    result = cdeq(
        "ingest", str(path), "--collection", "bad", "--model", str(tiny_model_dir), cwd=tmp_path
    )
    assert result.returncode == 2
    assert "line 2: not valid JSON" in result.stderr and "line 5: not valid JSON" in result.stderr
    path.write_text('{"id": "a", "text": "fine"}\n{"id": "b"}\n{"id": "a", "text": "again"}\n')
    result = cdeq(
        "ingest", str(path), "--collection", "bad", "--model", str(tiny_model_dir), cwd=tmp_path
    )
    assert result.returncode == 2
    assert (
        "documents[1].text: missing" in result.stderr
        and "documents[2].id: 'a' duplicates" in result.stderr
    )
    listed = cdeq("collections", cwd=tmp_path)
    assert listed.stdout.strip() == "no collections"


def test_errors_map_to_exit_codes(tiny_model_dir: Path, tmp_path: Path) -> None:
    missing = cdeq("search", "nothing-here", "text", "--model", str(tiny_model_dir), cwd=tmp_path)
    assert missing.returncode == 3 and "does not exist" in missing.stderr
    bad_name = cdeq("search", "Bad/Name", "text", "--model", str(tiny_model_dir), cwd=tmp_path)
    assert bad_name.returncode == 2 and "not a valid collection name" in bad_name.stderr
    docs = tmp_path / "one.jsonl"
    docs.write_text('{"id": "a", "text": "some text"}\n')
    no_model = cdeq(
        "ingest",
        str(docs),
        "--collection",
        "x",
        "--model",
        str(tmp_path / "no-model"),
        cwd=tmp_path,
    )
    assert no_model.returncode == 4 and "no such folder" in no_model.stderr
    no_redis = cdeq("status", "some-job", cwd=tmp_path)
    assert no_redis.returncode == 5 and "CDEQ_REDIS__URL" in no_redis.stderr


def test_make_tiny_model_and_migrate_twice(tmp_path: Path) -> None:
    made = cdeq("make-tiny-model", str(tmp_path / "m"), "--seed", "3", cwd=tmp_path)
    assert made.returncode == 0 and (tmp_path / "m" / "model.safetensors").is_file()
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (
        config["architectures"] == ["DatasetTransformer"]
        and config["backbone_config"]["n_embd"] == 64
    )
    first = cdeq("migrate", cwd=tmp_path)
    second = cdeq("migrate", cwd=tmp_path)
    assert first.returncode == second.returncode == 0
    assert "applied migrations 1, 2" in first.stdout and "nothing to do" in second.stdout


def test_create_collection_with_a_context_file(
    tiny_model_dir: Path, docs_file: Path, tmp_path: Path
) -> None:
    context = tmp_path / "context.txt"
    context.write_text("\n".join(topical_texts(40, seed=77)) + "\n")
    made = cdeq(
        "create-collection",
        "curated",
        "--context",
        str(context),
        "--model",
        str(tiny_model_dir),
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    assert "created curated (context v1 from 40 context texts)" in made.stdout
    again = cdeq("create-collection", "curated", "--model", str(tiny_model_dir), cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    ingest = cdeq(
        "ingest",
        str(docs_file),
        "--collection",
        "curated",
        "--model",
        str(tiny_model_dir),
        cwd=tmp_path,
    )
    assert ingest.returncode == 0, ingest.stderr
    listed = cdeq("collections", "--json", cwd=tmp_path)
    assert json.loads(listed.stdout)[0] == {
        "name": "curated",
        "documents": 60,
        "points": 60,
        "context_version": 1,
        "physical": "curated__c1",
        "sparse": True,
    }
