"""Reading a retrieval test set in the BEIR layout: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv.

Every problem is named by file and line (`corpus.jsonl:12: ...`) and all of them are reported
at once; queries without a judgement are skipped and counted, as BEIR does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import InvalidInput

# BEIR's dense retrievers (beir.retrieval.models.SentenceBERT) join a document as
# `(title + " " + text).strip()`: one space. cdeq does the same, so figures compare.
TITLE_SEPARATOR = " "
MAX_PROBLEMS = 200  # a broken file stops being read after this many problems
_WHITESPACE = re.compile(r"\s")


@dataclass(frozen=True)
class Dataset:
    """A loaded test set: documents (title and text joined), judged queries and judgements."""

    path: Path
    split: str
    corpus: dict[str, str]  # id -> "title text" (empty when the set was read without corpus)
    corpus_lines: dict[str, int]  # id -> its line in corpus.jsonl
    queries: dict[str, str]  # judged queries only, in file order
    qrels: dict[str, dict[str, int]]  # query id -> {document id: grade}
    queries_in_file: int = 0
    unjudged_skipped: int = 0  # queries of queries.jsonl with no line in the qrels

    @property
    def corpus_file(self) -> Path:
        return self.path / "corpus.jsonl"


def join_title(title: str, text: str) -> str:
    """A BEIR document as one text: title, one space, text (stripped; no title → the text)."""
    return (title + TITLE_SEPARATOR + text).strip()


def _check_id(value: Any, where: str, problems: list[str]) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        problems.append(f"{where}: `_id` must be a string, got {type(value).__name__}")
        return None
    ident = str(value)
    if not ident or _WHITESPACE.search(ident):
        problems.append(
            f"{where}: `_id` {ident!r} must be non-empty and without spaces or tabs "
            "(TREC run files separate fields by white space)"
        )
        return None
    return ident


def _json_lines(path: Path, problems: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line; bad lines go to ``problems``."""
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        problems.append(f"{path}: missing (the BEIR layout needs it)")
        return
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror or exc}")
        return
    with stream:
        for number, raw in enumerate(stream, start=1):
            if len(problems) >= MAX_PROBLEMS:
                return
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                problems.append(f"{where}: not valid UTF-8 (bad byte at column {exc.start + 1})")
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(value, dict):
                problems.append(f"{where}: must be a JSON object, got {type(value).__name__}")
                continue
            yield number, value


def _read_corpus(path: Path, problems: list[str]) -> tuple[dict[str, str], dict[str, int]]:
    corpus: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, row in _json_lines(path, problems):
        where = f"{path}:{number}"
        ident = _check_id(row.get("_id"), where, problems)
        title = row.get("title", "") if row.get("title") is not None else ""
        text = row.get("text")
        if not isinstance(text, str):
            problems.append(f"{where}: `text` must be a string, got {type(text).__name__}")
            continue
        if not isinstance(title, str):
            problems.append(f"{where}: `title` must be a string, got {type(title).__name__}")
            continue
        if ident is None:
            continue
        if ident in lines:
            problems.append(f"{where}: duplicate `_id` {ident!r} (first on line {lines[ident]})")
            continue
        joined = join_title(title, text)
        if not joined:
            problems.append(f"{where}: document {ident!r} has an empty title and text")
            continue
        corpus[ident] = joined
        lines[ident] = number
    if not corpus and not problems:
        problems.append(f"{path}: no documents")
    return corpus, lines


def _read_queries(path: Path, problems: list[str]) -> dict[str, tuple[str, int]]:
    queries: dict[str, tuple[str, int]] = {}
    for number, row in _json_lines(path, problems):
        where = f"{path}:{number}"
        ident = _check_id(row.get("_id"), where, problems)
        text = row.get("text")
        if not isinstance(text, str):
            problems.append(f"{where}: `text` must be a string, got {type(text).__name__}")
            continue
        if not text.strip():
            problems.append(f"{where}: query {ident!r} has an empty `text`")
            continue
        if ident is None:
            continue
        if ident in queries:
            problems.append(
                f"{where}: duplicate `_id` {ident!r} (first on line {queries[ident][1]})"
            )
            continue
        queries[ident] = (text, number)
    if not queries and not problems:
        problems.append(f"{path}: no queries")
    return queries


def _read_qrels(
    path: Path,
    queries: dict[str, tuple[str, int]],
    corpus_lines: dict[str, int] | None,
    problems: list[str],
) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    seen: dict[tuple[str, str], int] = {}
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        problems.append(f"{path}: missing (the BEIR layout needs it: query-id, corpus-id, score)")
        return qrels
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror or exc}")
        return qrels
    with stream:
        for number, raw in enumerate(stream, start=1):
            if len(problems) >= MAX_PROBLEMS:
                break
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                problems.append(f"{where}: not valid UTF-8 (bad byte at column {exc.start + 1})")
                continue
            if not line.strip():
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            if number == 1 and fields and fields[0].strip().lower() in ("query-id", "query_id"):
                continue  # the header line
            if len(fields) != 3:
                problems.append(
                    f"{where}: expected 3 tab-separated fields (query-id, corpus-id, score), "
                    f"got {len(fields)}"
                )
                continue
            qid, did, grade = (f.strip() for f in fields)
            try:
                score = int(grade)
            except ValueError:
                problems.append(f"{where}: score {grade!r} is not an integer")
                continue
            if qid not in queries:
                problems.append(f"{where}: query-id {qid!r} is not in queries.jsonl")
                continue
            if corpus_lines is not None and did not in corpus_lines:
                problems.append(f"{where}: corpus-id {did!r} is not in corpus.jsonl")
                continue
            if (qid, did) in seen:
                problems.append(
                    f"{where}: judgement of ({qid!r}, {did!r}) repeated "
                    f"(first on line {seen[(qid, did)]})"
                )
                continue
            seen[(qid, did)] = number
            qrels.setdefault(qid, {})[did] = score
    if not qrels and not problems:
        problems.append(f"{path}: no judgements")
    return qrels


def load_dataset(path: str | Path, *, split: str = "test", corpus: bool = True) -> Dataset:
    """The test set in folder ``path``; one InvalidInput lists every problem by file:line.

    ``corpus=False`` reads only queries and judgements (to evaluate an existing collection):
    corpus.jsonl is then used, when present, only to check the judged document ids."""
    folder = Path(path)
    if not folder.is_dir():
        raise InvalidInput(f"dataset: {str(folder)!r} is not a folder", field="dataset")
    if not split or "/" in split or split.startswith("."):
        raise InvalidInput(f"split: {split!r} is not a split name (e.g. test)", field="split")
    problems: list[str] = []
    docs: dict[str, str] = {}
    lines: dict[str, int] | None = None
    if corpus or (folder / "corpus.jsonl").is_file():
        docs, lines = _read_corpus(folder / "corpus.jsonl", problems)
        if not corpus:
            docs = {}  # only the ids were needed
    queries = _read_queries(folder / "queries.jsonl", problems)
    qrels = _read_qrels(folder / "qrels" / f"{split}.tsv", queries, lines, problems)
    if problems:
        raise InvalidInput(problems, field="dataset")
    judged = {qid: text for qid, (text, _) in queries.items() if qid in qrels}
    return Dataset(
        path=folder,
        split=split,
        corpus=docs,
        corpus_lines=lines or {},
        queries=judged,
        qrels=qrels,
        queries_in_file=len(queries),
        unjudged_skipped=len(queries) - len(judged),
    )
