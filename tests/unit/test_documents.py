"""Document validation: every problem named, nothing half accepted."""

from __future__ import annotations

import pytest

from app.documents import Document, check_collection_name, validate_documents
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
