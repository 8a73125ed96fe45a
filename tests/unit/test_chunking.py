"""Chunking long texts with the model's own tokenizer (v1 WordPiece and v2 byte-level BPE)."""

from __future__ import annotations

import itertools
import math
import random
import unicodedata
from pathlib import Path

import pytest

from app.errors import InvalidInput
from app.model import CdeEmbedder
from app.model.chunking import ChunkPlan, default_overlap, plan_chunks
from app.model.tiny import make_checkpoint
from tests.helpers.texts import topical_texts


@pytest.fixture(scope="module")
def v2(tmp_path_factory: pytest.TempPathFactory) -> CdeEmbedder:
    folder = make_checkpoint(tmp_path_factory.mktemp("tiny-v2-chunks"), family="v2", seed=1)
    return CdeEmbedder.from_pretrained(folder, device="cpu", dtype="float32")


@pytest.fixture(params=["v1", "v2"])
def model(request: pytest.FixtureRequest, embedder: CdeEmbedder) -> CdeEmbedder:
    return embedder if request.param == "v1" else request.getfixturevalue("v2")


def long_document(chars: int = 20_000, seed: int = 0) -> str:
    """Paragraphs of sentences, about `chars` characters."""
    rng = random.Random(seed)
    paragraphs: list[str] = []
    size = 0
    for words in topical_texts(400, seed):
        sentences = [
            " ".join(words.split()[i : i + 12]).capitalize() + "." for i in range(0, 60, 12)
        ]
        paragraph = " ".join(s for s in sentences if s != ".")
        paragraphs.append(paragraph)
        size += len(paragraph) + 2
        if size >= chars:
            break
    rng.shuffle(paragraphs)
    return "\n\n".join(paragraphs)[:chars]


def check_cover(text: str, plan: ChunkPlan) -> None:
    """First starts at 0, last ends at the end, each starts within or at the end of the last."""
    spans = plan.spans
    assert spans[0].start == 0
    assert spans[-1].end == len(text)
    for before, after in itertools.pairwise(spans):
        assert before.start < after.start <= before.end < after.end
    rebuilt = text[: spans[0].end] + "".join(
        text[b.end : a.end] for b, a in itertools.pairwise(spans)
    )
    assert rebuilt == text


def test_a_20000_character_document_is_cut_into_fitting_overlapping_chunks(
    model: CdeEmbedder,
) -> None:
    text = long_document()
    assert len(text) == 20_000
    budget = model.chunk_token_limit
    overlap = default_overlap(budget)
    total = model.count_tokens(text)
    plan = model.chunk(text)
    check_cover(text, plan)
    # Each chunk ends in the last 30% of its window, so it holds 70-100% of the budget.
    fewest = math.ceil((total - overlap) / (budget - overlap))
    most = math.ceil((total - overlap) / (int(budget * 0.7) - overlap)) + 1
    assert fewest <= len(plan.spans) <= most, (total, len(plan.spans))
    assert len(plan.spans) > 1 and not plan.capped
    for span in plan.spans:
        assert model.count_tokens(text[span.start : span.end]) <= budget
    for before, after in zip(plan.spans, plan.spans[1:], strict=False):
        assert before.end_token - overlap <= after.first_token <= before.end_token - overlap + 4
        # the shared characters are about `overlap` tokens of text
        shared = model.count_tokens(text[after.start : before.end])
        assert overlap - 4 <= shared <= overlap + 4, shared


def test_cuts_fall_at_paragraph_ends_when_one_is_near_the_window_end(
    embedder: CdeEmbedder,
) -> None:
    text = long_document(seed=3)
    plan = embedder.chunk(text)
    for span in plan.spans[:-1]:
        assert text[span.end - 2 : span.end] == "\n\n" or text[span.end - 1] == "."


def test_a_small_budget_and_zero_overlap_still_cover_the_text(model: CdeEmbedder) -> None:
    text = long_document(3_000, seed=5)
    plan = model.chunk(text, budget=40, overlap=0)
    check_cover(text, plan)
    for before, after in zip(plan.spans, plan.spans[1:], strict=False):
        assert after.start == before.end  # no overlap: they meet
    assert all(model.count_tokens(text[s.start : s.end]) <= 40 for s in plan.spans)


def test_a_text_within_the_budget_is_one_chunk_of_all_of_it(model: CdeEmbedder) -> None:
    text = "  A short document.\n"
    plan = model.chunk(text)
    assert [(s.start, s.end) for s in plan.spans] == [(0, len(text))]


UNICODE_PIECES = [
    "東京都の天気は晴れです。",
    "这是一个没有空格的中文句子",
    "👨‍👩‍👧‍👦",
    "👍🏽",
    "❤️",
    "e\u0301",
    "n\u0303o",
    "Ωμέγα",
    "ok ",
]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unicode_is_never_cut_inside_a_character_or_grapheme(model: CdeEmbedder, seed: int) -> None:
    rng = random.Random(seed)
    text = "".join(rng.choice(UNICODE_PIECES) for _ in range(1_500))
    plan = model.chunk(text, budget=50, overlap=6)
    check_cover(text, plan)
    assert len(plan.spans) > 10
    for span in plan.spans:
        chunk = text[span.start : span.end]
        chunk.encode("utf-8")  # whole code points
        first = chunk[0]
        assert unicodedata.combining(first) == 0, span
        assert first not in "\u200d\ufe0f" and not "\U0001f3fb" <= first <= "\U0001f3ff", span
        assert model.count_tokens(chunk) <= 50


def test_a_cap_keeps_the_first_chunks_and_says_so(embedder: CdeEmbedder) -> None:
    text = long_document(6_000, seed=7)
    whole = embedder.chunk(text, budget=64)
    capped = embedder.chunk(text, budget=64, max_chunks=3)
    assert capped.capped and not whole.capped
    assert capped.spans == whole.spans[:3]


def test_the_pure_planner_cuts_only_where_the_character_offset_advances() -> None:
    # "ab" + one character spread over 3 byte tokens + "cd": offsets as byte-level BPE gives.
    text = "ab\u4e00cd"
    offsets = [(0, 1), (1, 2), (2, 3), (2, 3), (2, 3), (3, 4), (4, 5)]
    plan = plan_chunks(text, offsets, budget=3, overlap=0)
    assert [(s.first_token, s.end_token) for s in plan.spans] == [(0, 2), (2, 5), (5, 7)]
    assert [(s.start, s.end) for s in plan.spans] == [(0, 2), (2, 3), (3, 5)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget": 0}, "chunk budget must be from 1 to"),
        ({"budget": 100_000}, "chunk budget must be from 1 to"),
        ({"budget": 100, "overlap": 51}, "at most half the chunk budget"),
        ({"budget": 100, "overlap": -1}, "chunk overlap must be"),
    ],
)
def test_bad_budgets_are_refused_with_the_limit(
    embedder: CdeEmbedder, kwargs: dict[str, int], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        embedder.chunk("some text", **kwargs)


def test_chunk_token_limit_leaves_room_for_the_prefix(
    embedder: CdeEmbedder, tmp_path: Path
) -> None:
    text = long_document(20_000, seed=9)
    for span in embedder.chunk(text).spans:
        ids, truncated = embedder.tokenize([text[span.start : span.end]], "search_document: ")
        assert not truncated[0] and len(ids[0]) <= embedder.max_seq_length
