"""Cutting a long text into overlapping chunks of at most N tokens, from its tokens' offsets.

Pure: the caller tokenizes (the model's own tokenizer, without special tokens) and passes the
character offsets of each token. A cut falls only where the character offset advances (never
inside a character that byte-level BPE spreads over several tokens) and never before a
combining mark or joiner (never inside a grapheme such as "e" + U+0301).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

# The part of a window where a paragraph or sentence boundary is looked for: its last 30%.
BOUNDARY_ZONE = 0.3
_SENTENCE_ENDS = frozenset(".!?;:。！？；…")
_CLOSERS = frozenset("\"'”’)]»」』")
# Characters that continue the grapheme before them: a cut just before one would split it.
_JOINERS = frozenset("\u200d\u200c\ufe0e\ufe0f")


@dataclass(frozen=True)
class ChunkSpan:
    """One chunk: characters ``[start, end)`` of the text, tokens ``[first_token, end_token)``."""

    start: int
    end: int
    first_token: int
    end_token: int

    @property
    def tokens(self) -> int:
        return self.end_token - self.first_token


@dataclass(frozen=True)
class ChunkPlan:
    """The chunks of one text; ``capped`` when ``max_chunks`` stopped them before its end."""

    spans: list[ChunkSpan]
    capped: bool = False


def default_overlap(budget: int) -> int:
    """About 12% of the budget (the issue's default), at least 0."""
    return max(0, round(budget * 0.12))


def _continues_grapheme(ch: str) -> bool:
    return unicodedata.combining(ch) != 0 or ch in _JOINERS or "\U0001f3fb" <= ch <= "\U0001f3ff"


def _cuttable(text: str, offsets: Sequence[tuple[int, int]], index: int) -> bool:
    """Whether a chunk may start at token ``index`` (the cut between ``index-1`` and it)."""
    if index <= 0 or index >= len(offsets):
        return index == 0
    start = offsets[index][0]
    if start <= offsets[index - 1][0] or start < offsets[index - 1][1]:
        return False  # the same character as the token before (a multi-token character)
    return start >= len(text) or not _continues_grapheme(text[start])


def _boundary_rank(text: str, offsets: Sequence[tuple[int, int]], index: int) -> int:
    """How good a cut before token ``index`` is: 3 paragraph, 2 sentence or line, 1 space,
    0 other. Read from the text around the cut, so WordPiece (spaces between tokens) and
    byte-level BPE (spaces and newlines inside tokens) rank alike."""
    at = offsets[index][0]
    before = text[max(0, at - 8) : at]
    spaces = before[len(before.rstrip()) :]
    if "\n\n" in spaces:
        return 3
    if "\n" in spaces or text[at : at + 1] == "\n":
        return 2
    word = before.rstrip().rstrip("".join(_CLOSERS))
    after_space = bool(spaces) or text[at : at + 1].isspace()
    if word and word[-1] in _SENTENCE_ENDS and (after_space or _wide(word[-1])):
        return 2
    return 1 if after_space else 0


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def plan_chunks(
    text: str,
    offsets: Sequence[tuple[int, int]],
    budget: int,
    overlap: int,
    max_chunks: int | None = None,
) -> ChunkPlan:
    """Chunks of ``text`` of at most ``budget`` tokens each, consecutive ones sharing about
    ``overlap`` tokens; their union is the whole text (the first starts at 0, the last ends at
    ``len(text)``, each starts at or before the previous one's end).

    ``offsets``: the (start, end) characters of each token of ``text`` (no special tokens).
    A text of at most ``budget`` tokens is one chunk. A cut is made at the best boundary
    (paragraph, then sentence, then space) in the last 30% of the window, else at the last
    token boundary that is not inside a character. Only a single character longer than the
    budget (never seen in practice) gives a chunk over it."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if not 0 <= overlap < budget:
        raise ValueError(f"overlap must be in [0, budget), got {overlap} for budget {budget}")
    n = len(offsets)
    if n <= budget:
        return ChunkPlan([ChunkSpan(0, len(text), 0, n)])
    spans: list[ChunkSpan] = []
    first, char_start = 0, 0
    zone = max(1, int(budget * BOUNDARY_ZONE))
    while True:
        if max_chunks is not None and len(spans) == max_chunks:
            return ChunkPlan(spans, capped=True)
        limit = first + budget
        if limit >= n:
            spans.append(ChunkSpan(char_start, len(text), first, n))
            return ChunkPlan(spans)
        cut = _best_cut(text, offsets, first, limit, zone)
        if cut >= n:
            spans.append(ChunkSpan(char_start, len(text), first, n))
            return ChunkPlan(spans)
        spans.append(ChunkSpan(char_start, offsets[cut][0], first, cut))
        # The next chunk starts `overlap` tokens back, moved forward to a character boundary,
        # and always after this chunk's start (progress).
        nxt = max(cut - overlap, first + 1)
        while not _cuttable(text, offsets, nxt):
            nxt += 1
        first, char_start = nxt, offsets[nxt][0]


def _best_cut(
    text: str, offsets: Sequence[tuple[int, int]], first: int, limit: int, zone: int
) -> int:
    """The token index where the chunk starting at ``first`` ends (exclusive)."""
    best, best_rank = -1, -1
    for index in range(limit, max(first, limit - zone), -1):
        if not _cuttable(text, offsets, index):
            continue
        rank = _boundary_rank(text, offsets, index)
        if rank > best_rank:
            best, best_rank = index, rank
            if rank == 3:
                break
    if best_rank >= 1:
        return best
    for index in range(limit, first, -1):  # no space nearby (CJK, code): any token boundary
        if _cuttable(text, offsets, index):
            return index
    index = limit + 1  # one character longer than the budget: cut after it
    while index < len(offsets) and not _cuttable(text, offsets, index):
        index += 1
    return index  # len(offsets) when that character ends the text
