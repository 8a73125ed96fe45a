"""Document validation: every problem named, nothing half accepted."""

from __future__ import annotations

import json
import re

import pytest

from app.documents import Document, check_collection_name, parse_json, validate_documents
from app.errors import InvalidInput


def check(collection: object, documents: object) -> list[Document]:
    return validate_documents(collection, documents, max_documents=100, max_text_chars=1000)


def test_valid_documents_pass_through() -> None:
    docs = check(
        "my-docs_1",
        [{"id": "a", "text": "hello"}, {"id": 7, "text": "x", "metadata": {"k": [1, 2]}}],
    )
    assert docs == [Document("a", "hello", {}), Document("7", "x", {"k": [1, 2]})]
    assert docs[0].content_hash != Document("a", "hello!", {}).content_hash


def test_every_problem_is_listed_at_once() -> None:
    bad = [
        {"id": "ok", "text": "fine"},
        {"text": "no id"},
        {"id": "x" * 257, "text": "long id"},
        {"id": "e", "text": "   "},
        {"id": "m", "text": "t", "metadata": {"when": object()}},
        {"id": "ok", "text": "duplicate"},
        "not an object",
        {"id": "u", "text": "t", "txt": "typo"},
        {"id": "n", "text": "t", "metadata": {"x": float("nan")}},
        {"id": "big", "text": "y" * 1001},
        {"id": True, "text": "bool id"},
        {"id": "s", "text": "lone \ud800 surrogate"},
    ]
    with pytest.raises(InvalidInput) as err:
        check("docs", bad)
    problems = err.value.problems
    expected = [
        "documents[1].id: missing",
        "documents[2].id: 257 characters, more than the limit of 256",
        "documents[3].text: empty or whitespace-only",
        "documents[4].metadata.when: not JSON-serializable",
        "documents[5].id: 'ok' duplicates documents[0].id",
        "documents[6]: must be an object",
        "documents[7]: unknown field(s) txt",
        "documents[8].metadata.x: not JSON-serializable",
        "documents[9].text: 1001 characters, more than the limit of 1000",
        "documents[10].id: must be a string (or integer), got bool",
        "documents[11].text: not valid Unicode",
    ]
    assert len(problems) == len(expected)
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), (problem, start)


@pytest.mark.parametrize(
    "name", ["", "..", "a/b", "%2F", "Upper", "-lead", "x" * 64, "sp ace", "trail\n", None, 5]
)
def test_bad_collection_names(name: object) -> None:
    with pytest.raises(InvalidInput, match="not a valid collection name"):
        check_collection_name(name)
    with pytest.raises(InvalidInput, match="collection"):
        check(name, [{"id": "a", "text": "b"}])


def test_collection_name_limits() -> None:
    assert check_collection_name("a" * 63) == "a" * 63
    assert check_collection_name("0-a_b") == "0-a_b"


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        ([], "documents: empty"),
        ("text", "must be a list of objects, got str"),
        ({"id": "a", "text": "b"}, "must be a list of objects, got dict"),
        (
            [{"id": str(i), "text": "t"} for i in range(101)],
            "101 items, more than the limit of 100",
        ),
    ],
)
def test_bad_document_lists(documents: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check("docs", documents)


@pytest.mark.parametrize("name", ["docs__c1", "cdeq_meta"])
def test_reserved_collection_names(name: str) -> None:
    with pytest.raises(InvalidInput, match="is reserved"):
        check_collection_name(name)


# ---- what storage accepts: checked before anything is queued ----------------------------------
def deep(levels: int) -> dict[str, object]:
    value: dict[str, object] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"id": "id\ud800", "text": "t"}, r"documents\[0\]\.id: 'id\\ud800' is not valid Unicode"),
        ({"id": "a", "text": "t", "metadata": {"k": "v\udfff"}}, r"metadata\.k: not valid Unicode"),
        (
            {"id": "a", "text": "t", "metadata": {"k\ud800": 1}},
            r"key 'k\\ud800' is not valid Unicode",
        ),
        (
            {"id": "a", "text": "t", "metadata": {1: "a", "b": 2}},
            r"key 1 is a int; metadata keys must be strings",
        ),
        (
            {"id": "a", "text": "t", "metadata": {"n": {(1, 2): 3}}},
            r"metadata\.n: key \(1, 2\) is a tuple",
        ),
        ({"id": "a", "text": "t", "metadata": deep(10_000)}, r"nested deeper than 32 levels"),
        (
            {"id": "a", "text": "t", "metadata": {"n": 10**5000}},
            r"metadata\.n: integer out of the JSON-safe range",
        ),
        (
            {"id": "a", "text": "t", "metadata": {"n": [1, -(2**53)]}},
            r"metadata\.n\[1\]: integer out of",
        ),
        ({"id": 10**5000, "text": "t"}, r"documents\[0\]\.id: integer out of the JSON-safe range"),
        (
            {"id": "a", "text": "t", "metadata": {"f": float("inf")}},
            r"metadata\.f: not JSON-serializable: inf",
        ),
        (
            {"id": "a", "text": "t", "metadata": {"s": {1, 2}}},
            r"metadata\.s: not JSON-serializable: set",
        ),
        (
            {"id": "a", "text": "t", "metadata": {"x": "y" * 2000}},
            r"metadata: \d+ bytes as JSON, more than the limit of 1024",
        ),
    ],
)
def test_what_storage_cannot_carry_is_refused_up_front(
    document: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_documents(
            "docs", [document], max_documents=10, max_text_chars=100, max_metadata_bytes=1024
        )


def test_limits_are_inclusive_and_what_passes_is_stored_as_given() -> None:
    metadata = {"deep": deep(31), "big": 2**53 - 1, "small": -(2**53 - 1), "ü": ["ß", None, 1.5]}
    (doc,) = validate_documents(
        "docs",
        [{"id": 2**53 - 1, "text": "t", "metadata": metadata}],
        max_documents=1,
        max_text_chars=1,
    )
    assert doc.id == str(2**53 - 1) and doc.metadata == metadata
    size = len(
        json.dumps({"x": "y" * 10}, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    )
    validate_documents(
        "d",
        [{"id": "a", "text": "t", "metadata": {"x": "y" * 10}}],
        max_documents=1,
        max_text_chars=1,
        max_metadata_bytes=size,
    )
    with pytest.raises(
        InvalidInput, match=f"{size} bytes as JSON, more than the limit of {size - 1}"
    ):
        validate_documents(
            "d",
            [{"id": "a", "text": "t", "metadata": {"x": "y" * 10}}],
            max_documents=1,
            max_text_chars=1,
            max_metadata_bytes=size - 1,
        )
    with pytest.raises(InvalidInput, match="nested deeper than 32"):
        validate_documents(
            "d", [{"id": "a", "text": "t", "metadata": deep(33)}], max_documents=1, max_text_chars=1
        )


def test_problems_name_the_line_when_documents_came_from_a_file() -> None:
    docs = [{"id": "a", "text": "t"}, {"id": "b"}, {"id": "a", "text": "u"}]
    with pytest.raises(InvalidInput) as err:
        validate_documents("d", docs, max_documents=9, max_text_chars=9, lines=[1, 4, 7])
    assert err.value.problems == [
        "line 4: documents[1].text: missing",
        "line 7: documents[2].id: 'a' duplicates documents[0].id (line 1)",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{bad", "Expecting property name enclosed in double quotes (column 2)"),
        ('{"n": NaN}', "NaN is not valid JSON"),
        ('{"n": 1e999}', "number 1e999 is out of range"),
        ('{"n": ' + "9" * 5000 + "}", "an integer with 5000 digits is out of range"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_parse_json_is_strict_and_never_raises_anything_else(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_json(text)
