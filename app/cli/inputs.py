"""Reading `cdeq`'s input files as a stream, line by line: documents (JSON lines) and texts."""

from __future__ import annotations

import codecs
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from app.errors import (
    InvalidInput,
)


# ---- reading input files ----------------------------------------------------------------------
def _open_input(path: str, what: str) -> IO[bytes]:
    """``path`` opened for binary reading ('-' = stdin); a clear InvalidInput when it cannot be."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InvalidInput(
            f"{what}: cannot read {path!r}: {exc.strerror or exc}", field=what
        ) from None


def _lines(
    stream: IO[bytes], max_line_bytes: int, problems: list[str]
) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line, read one at a time (constant memory).

    A UTF-8 byte-order mark is dropped; a line that is not UTF-8, or longer than
    ``max_line_bytes``, is reported in ``problems`` and skipped."""
    number = 0
    while True:
        raw = stream.readline(max_line_bytes + 1)
        if not raw:
            return
        number += 1
        if len(raw) > max_line_bytes:
            while raw and not raw.endswith(b"\n"):  # skip the rest without holding it
                raw = stream.readline(1 << 16)
            problems.append(f"line {number}: longer than the limit of {max_line_bytes} bytes")
            continue
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"line {number}: not valid UTF-8 (bad byte at column {exc.start + 1})")
            continue
        if text.strip():
            yield number, text


EXPECTED_JSONL = 'expected JSONL (one JSON object per line), e.g. {"id": "doc-1", "text": "…"}'


@dataclass
class DocumentsFile:
    """Parsed documents of a JSON-lines file, the line each came from, and every bad line."""

    documents: list[Any] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_documents(path: str, *, max_documents: int, max_line_bytes: int) -> DocumentsFile:
    """Documents from a JSON-lines file ('-' = stdin), streamed: only parsed documents are kept.

    Every bad line is collected in ``problems``; more than ``max_documents`` documents stop the
    reading at once."""
    from app.documents import parse_json

    out = DocumentsFile()
    with _open_input(path, "file") as stream:
        for number, text in _lines(stream, max_line_bytes, out.problems):
            try:
                value = parse_json(text)
            except ValueError as exc:
                head = text.lstrip()[:1]
                plain = not (out.problems or out.documents or head in "{[-" or head.isdigit())
                hint = f" ({EXPECTED_JSONL})" if plain else ""  # a plain-text file, most likely
                out.problems.append(f"line {number}: not valid JSON{hint}: {exc}")
                continue
            if len(out.documents) >= max_documents:
                raise InvalidInput(
                    f"file: more than {max_documents} documents, the limit per job "
                    "(CDEQ_INGEST__MAX_DOCUMENTS_PER_JOB): split the file",
                    field="file",
                )
            out.documents.append(value)
            out.lines.append(number)
    return out


def read_jsonl(
    path: str, *, max_documents: int = 10**9, max_line_bytes: int = 1 << 26
) -> list[Any]:
    """JSON values of a JSON-lines file ('-' = stdin); one InvalidInput lists every bad line."""
    read = read_documents(path, max_documents=max_documents, max_line_bytes=max_line_bytes)
    if read.problems:
        raise InvalidInput(read.problems, field="file")
    return read.documents


def read_text_lines(path: str, what: str) -> list[str]:
    """The non-blank lines of a UTF-8 text file (BOM accepted), without their line ends."""
    problems: list[str] = []
    with _open_input(path, what) as stream:
        texts = [text.rstrip("\r\n") for _, text in _lines(stream, 1 << 24, problems)]
    if problems:
        raise InvalidInput([f"{what} {path}: {p}" for p in problems], field=what)
    return texts


_LINE = re.compile(r"line (\d+):")


def _by_line(problem: str) -> int:
    found = _LINE.match(problem)
    return int(found.group(1)) if found else 0


def load_documents_file(path: str, collection: str, settings: Any) -> list[Any]:
    """The documents of ``path``, checked as `submit` will check them, so that one error lists
    every bad line (JSON or document) by its line number before anything is queued."""
    from app.documents import validate_documents

    ingest = settings.ingest
    # A line holds one document: its text (6 bytes per character at worst, as \uXXXX escapes),
    # its metadata and its id. Longer lines are refused without being held in memory.
    max_line_bytes = 6 * ingest.max_text_chars + 2 * ingest.max_metadata_bytes + 4096
    read = read_documents(
        path, max_documents=ingest.max_documents_per_job, max_line_bytes=max_line_bytes
    )
    problems = list(read.problems)
    try:
        validate_documents(
            collection,
            read.documents,
            max_documents=ingest.max_documents_per_job,
            max_text_chars=ingest.max_text_chars,
            max_metadata_bytes=ingest.max_metadata_bytes,
            lines=read.lines,
        )
    except InvalidInput as exc:
        skip_empty = bool(problems)  # "no documents" only matters when no line was refused
        problems.extend(
            p for p in exc.problems if not (skip_empty and p.startswith("documents: empty"))
        )
    if problems:
        problems.sort(key=_by_line)
        raise InvalidInput(problems, field="file")
    return read.documents
