"""`cdeq eval`: the BEIR loader's errors, the figures (ir-measures), the end-to-end runs and
that throw-away collections never outlive the evaluation (errors and Ctrl-C included)."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ir_measures
import pytest

from app.errors import InvalidInput
from app.evaluation import (
    MEASURES,
    aggregate,
    check_plot_available,
    evaluate,
    join_title,
    load_dataset,
    per_query,
    write_plot,
)
from app.ingest import submit
from app.model import CdeEmbedder
from app.service import Cdeq
from tests.helpers.builders import ROOT, cdeq, make_settings

EXAMPLES = ROOT / "examples"


# ---- building test sets ---------------------------------------------------------------------------
def write_set(
    folder: Path,
    corpus: list[dict[str, Any]],
    queries: list[dict[str, Any]],
    qrels: list[tuple[str, str, int]],
    *,
    header: bool = True,
) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    lines = ["query-id\tcorpus-id\tscore"] if header else []
    lines += [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder


def real_texts(n: int) -> list[tuple[str, str]]:
    """(id, text) of the first `n` example documents: real web texts (examples/docs.jsonl)."""
    rows = [json.loads(line) for line in (EXAMPLES / "docs.jsonl").read_text().splitlines()]
    return [(r["id"], r["text"]) for r in rows[:n]]


def sentence_of(text: str) -> str:
    """The longest sentence of `text`: an exact piece of it to search with."""
    parts = [p.strip() for p in re.split(r"(?<=[.?!])\s+", text) if p.strip()]
    return max(parts, key=len)


@pytest.fixture()
def generated_set(tmp_path: Path) -> Path:
    """40 real texts; each query is an exact sentence of its one relevant document; one
    more query has no judgement (skipped and counted)."""
    docs = real_texts(40)
    corpus = [{"_id": i, "title": "", "text": t} for i, t in docs]
    queries = [{"_id": f"q-{i}", "text": sentence_of(t)} for i, t in docs]
    queries.append({"_id": "q-unjudged", "text": "a question nobody judged"})
    return write_set(tmp_path / "set", corpus, queries, [(f"q-{i}", i, 1) for i, _ in docs])


@pytest.fixture()
def svc(tiny_model_dir: Path, tmp_path: Path, embedder: CdeEmbedder) -> Iterator[Cdeq]:
    service = Cdeq(make_settings(tiny_model_dir, tmp_path / "qdrant"), embedder=embedder)
    yield service
    service.close()


def physical_collections(service: Cdeq) -> list[str]:
    """Every Qdrant collection but the metadata one: what an evaluation could leave behind."""
    names = [c.name for c in service.store.client.get_collections().collections]
    return sorted(n for n in names if n != service.store.meta_collection)


# ---- metrics --------------------------------------------------------------------------------------
QRELS = {
    "q1": {"a": 2, "b": 1, "z": 0},
    "q2": {"c": 1},
    "q3": {"d": 1},
}
RUN = {
    "q1": {"a": 3.0, "x": 2.0, "b": 1.0},
    "q2": {"x": 2.0, "c": 1.0},
    "q3": {"x": 2.0, "y": 1.0},
}


def test_hand_checked_case() -> None:
    """Linear gains (trec_eval's ndcg_cut, as BEIR): q1 = (2 + 1/log2 4) / (2 + 1/log2 3),
    q2 = 1/log2 3 (the one relevant document at rank 2), q3 = 0 (never retrieved)."""
    q1 = (2 + 1 / math.log2(4)) / (2 + 1 / math.log2(3))
    q2 = 1 / math.log2(3)
    values = per_query(QRELS, RUN)
    assert values["q1"]["nDCG@10"] == pytest.approx(q1, abs=1e-9)
    assert values["q2"]["nDCG@10"] == pytest.approx(q2, abs=1e-9)
    assert values["q3"] == dict.fromkeys(MEASURES, 0.0)
    mean = aggregate(QRELS, RUN)
    assert mean["nDCG@10"] == pytest.approx((q1 + q2) / 3, abs=1e-9)
    assert mean["nDCG@10"] == pytest.approx(0.5270548, abs=1e-6)
    assert mean["RR@10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert mean["R@10"] == pytest.approx(2 / 3)
    assert mean["R@100"] == pytest.approx(2 / 3)


def test_figures_equal_the_library_own_computation() -> None:
    expected = ir_measures.calc_aggregate(list(MEASURES.values()), QRELS, RUN)
    mine = aggregate(QRELS, RUN)
    for name, measure in MEASURES.items():
        assert mine[name] == pytest.approx(expected[measure], abs=1e-12)


def test_a_judged_query_without_results_counts_as_zero() -> None:
    """A judged query the run has nothing for scores 0 (in the library too), so a condition that
    returns nothing for some queries is not flattered."""
    run = {q: docs for q, docs in RUN.items() if q != "q3"}
    assert aggregate(QRELS, run) == pytest.approx(aggregate(QRELS, RUN))
    library = ir_measures.calc_aggregate([MEASURES["RR@10"]], QRELS, run)[MEASURES["RR@10"]]
    assert library == pytest.approx(0.5) == aggregate(QRELS, run)["RR@10"]


# ---- the loader --------------------------------------------------------------------------------------
def test_loader_reads_the_shipped_set() -> None:
    data = load_dataset(EXAMPLES / "eval")
    assert len(data.corpus) == 360 and len(data.queries) >= 40
    assert data.unjudged_skipped == 0
    grades = {g for docs in data.qrels.values() for g in docs.values()}
    assert grades == {1, 2}  # graded: 2 answers it, 1 is related
    assert all(2 in docs.values() for docs in data.qrels.values())  # each query has an answer
    source = {
        json.loads(line)["id"]: json.loads(line)["text"]
        for line in (EXAMPLES / "docs.jsonl").read_text().splitlines()
    }
    assert data.corpus == source  # corpus.jsonl is docs.jsonl with empty titles


def test_title_and_text_are_joined_with_one_space(tmp_path: Path) -> None:
    assert join_title("Tides", "The moon pulls.") == "Tides The moon pulls."
    assert join_title("", "The moon pulls.") == "The moon pulls."
    folder = write_set(
        tmp_path,
        [{"_id": "d1", "title": "Tides", "text": "The moon pulls."}, {"_id": 7, "text": "x"}],
        [{"_id": "q1", "text": "moon"}, {"_id": "q2", "text": "no judgement"}],
        [("q1", "d1", 1), ("q1", "7", 0)],
    )
    data = load_dataset(folder)
    assert data.corpus == {"d1": "Tides The moon pulls.", "7": "x"}
    assert (data.queries, data.unjudged_skipped, data.queries_in_file) == ({"q1": "moon"}, 1, 2)


def problems_of(folder: Path) -> list[str]:
    with pytest.raises(InvalidInput) as caught:
        load_dataset(folder)
    return caught.value.problems


def test_every_bad_line_is_named_by_file_and_line(tmp_path: Path) -> None:
    folder = write_set(
        tmp_path,
        [{"_id": "d1", "text": "fine"}, {"_id": "d1", "text": "again"}, {"text": "no id"}],
        [{"_id": "q1", "text": "fine"}, {"_id": "q2", "text": "   "}],
        [("q1", "d1", 1), ("q1", "ghost", 1), ("q9", "d1", 1), ("q1", "d1", 2)],
    )
    with (folder / "corpus.jsonl").open("a") as f:
        f.write('{"_id": "d4", "text": \n')
    found = problems_of(folder)
    corpus, queries, qrels = (
        str(folder / n) for n in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")
    )
    expected = [
        f"{corpus}:2: duplicate `_id` 'd1' (first on line 1)",
        f"{corpus}:3: `_id` must be a string, got NoneType",
        f"{corpus}:4: not valid JSON",
        f"{queries}:2: query 'q2' has an empty `text`",
        f"{qrels}:3: corpus-id 'ghost' is not in corpus.jsonl",
        f"{qrels}:4: query-id 'q9' is not in queries.jsonl",
        f"{qrels}:5: judgement of ('q1', 'd1') repeated (first on line 2)",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in found), (start, found)
    assert len(found) == len(expected)


def test_missing_files_and_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is not a folder"):
        load_dataset(tmp_path / "nowhere")
    found = problems_of(tmp_path)
    assert found == [
        f"{tmp_path / 'corpus.jsonl'}: missing (the BEIR layout needs it)",
        f"{tmp_path / 'queries.jsonl'}: missing (the BEIR layout needs it)",
        f"{tmp_path / 'qrels' / 'test.tsv'}: missing (the BEIR layout needs it: query-id, "
        "corpus-id, score)",
    ]


def test_bad_qrels_fields_and_ids_with_spaces(tmp_path: Path) -> None:
    folder = write_set(
        tmp_path,
        [{"_id": "a b", "text": "t"}, {"_id": "d", "text": "t"}],
        [{"_id": "q", "text": "t"}],
        [],
        header=False,
    )
    (folder / "qrels" / "test.tsv").write_text("q\td\tone\nq\td\n")
    found = problems_of(folder)
    assert any(p.startswith(f"{folder / 'corpus.jsonl'}:1: `_id` 'a b' must be") for p in found)
    assert f"{folder / 'qrels/test.tsv'}:1: score 'one' is not an integer" in found
    assert any(p.startswith(f"{folder / 'qrels/test.tsv'}:2: expected 3") for p in found)


# ---- the command line: bad inputs → exit 2 with file:line ---------------------------------------------
def test_cli_bad_dataset_exits_2_naming_file_and_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = write_set(
        tmp_path / "bad",
        [{"_id": "d1", "text": "fine"}],
        [{"_id": "q1", "text": "x"}],
        [("q1", "d2", 1)],
    )
    done = cdeq("eval", str(folder), "--model", str(tiny_model_dir), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert (
        f"{folder / 'qrels' / 'test.tsv'}:2: corpus-id 'd2' is not in corpus.jsonl" in done.stderr
    )
    assert not (tmp_path / "cdeq-data").exists()  # refused before any collection was made


def test_cli_unknown_mode_chunking_and_missing_plot_library(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    args = ("eval", str(EXAMPLES / "eval"), "--model", str(tiny_model_dir))
    bad_mode = cdeq(*args, "--modes", "dense,telepathy", cwd=tmp_path)
    assert bad_mode.returncode == 2
    assert "modes: unknown 'telepathy'; this build knows dense" in bad_mode.stderr
    bad_context = cdeq(*args, "--contexts", "corpus,nofile.txt", cwd=tmp_path)
    assert bad_context.returncode == 2 and "'nofile.txt' is neither corpus" in bad_context.stderr
    chunking = cdeq(*args, "--chunking", "off,sideways", cwd=tmp_path)
    assert chunking.returncode == 2 and "chunking:" in chunking.stderr
    no_folder = cdeq(*args, "--json", str(tmp_path / "no" / "r.json"), cwd=tmp_path)
    assert no_folder.returncode == 2 and "--json: folder" in no_folder.stderr


def test_plot_needs_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the extra were not installed
    with pytest.raises(InvalidInput, match=r"cdeq\[plot\]"):
        check_plot_available()


# ---- end to end -------------------------------------------------------------------------------------
def recomputed_from_runs(runs: Path, qrels: dict[str, dict[str, int]]) -> dict[str, Any]:
    figures = {}
    for path in sorted(runs.glob("*.trec")):
        run: dict[str, dict[str, float]] = {}
        for doc in ir_measures.read_trec_run(str(path)):
            run.setdefault(doc.query_id, {})[doc.doc_id] = doc.score
        values = ir_measures.calc_aggregate(list(MEASURES.values()), qrels, run)
        figures[path.stem] = {name: values[m] for name, m in MEASURES.items()}
    return figures


@pytest.mark.slow
def test_cli_end_to_end_dense_runs_agree_with_json(
    generated_set: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Two contexts (corpus, generic), JSON and run files; the run files give the JSON's
    figures when scored again, and no collection is left behind. Dense figures of a random
    model mean nothing, so none is asserted."""
    out = tmp_path / "out"
    out.mkdir()
    done = cdeq(
        "eval",
        str(generated_set),
        "--contexts",
        "corpus,generic",
        "--model",
        str(tiny_model_dir),
        "--json",
        str(out / "r.json"),
        "--runs",
        str(out / "runs"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "corpus/dense" in done.stdout and "generic/dense" in done.stdout
    assert "40 of 40 judged queries (1 without judgement skipped)" in done.stdout
    report = json.loads((out / "r.json").read_text())
    assert report["queries"] == {
        "in_file": 41,
        "judged": 40,
        "unjudged_skipped": 1,
        "evaluated": 40,
    }
    assert report["model"]["fingerprint"] and report["settings"]["title_separator"] == " "
    assert [c["name"] for c in report["conditions"]] == ["corpus/dense", "generic/dense"]
    assert all(
        c["documents_stored"] == 40 and c["judged_queries"] == 40 for c in report["conditions"]
    )
    qrels = load_dataset(generated_set).qrels
    again = recomputed_from_runs(out / "runs", qrels)
    assert set(again) == {"corpus.dense", "generic.dense"}
    for condition in report["conditions"]:
        assert again[condition["tag"]] == pytest.approx(condition["metrics"], abs=1e-12)
    for path in (out / "runs").glob("*.trec"):
        first = path.read_text().splitlines()[0].split()
        assert first[1] == "Q0" and first[3] == "1" and first[5] == path.stem
    listed = cdeq("collections", "--json", cwd=tmp_path)
    assert json.loads(listed.stdout) == []


@pytest.mark.slow
def test_sparse_finds_exact_sentences(generated_set: Path, svc: Cdeq) -> None:
    """Each query is an exact sentence of its document: BM25 must find nearly all of them."""
    report = evaluate(generated_set, modes=["sparse"], service=svc)
    assert report.results[0].metrics["nDCG@10"] >= 0.9
    assert physical_collections(svc) == []


@pytest.mark.slow
def test_interrupt_and_errors_leave_nothing_behind(generated_set: Path, svc: Cdeq) -> None:
    class Stop(Exception):
        pass

    def interrupt_at_queries(stage: str, done: int, total: int) -> None:
        if stage.startswith("queries generic") and done == 3:
            raise KeyboardInterrupt  # Ctrl-C while the second condition is searched

    with pytest.raises(KeyboardInterrupt):
        evaluate(
            generated_set,
            contexts=["corpus", "generic"],
            service=svc,
            on_progress=interrupt_at_queries,
        )
    assert physical_collections(svc) == []
    assert svc.store.list_collections() == []

    def fail_while_ingesting(stage: str, done: int, total: int) -> None:
        if stage.startswith("ingest") and done > 0:
            raise Stop("disk on fire")

    with pytest.raises(Stop):
        evaluate(generated_set, service=svc, on_progress=fail_while_ingesting)
    assert physical_collections(svc) == []

    kept = evaluate(generated_set, service=svc, keep=True, max_queries=5, seed=3)
    assert len(kept.kept_collections) == 1 and kept.queries_evaluated == 5
    assert [c.name for c in svc.store.list_collections()] == kept.kept_collections


@pytest.mark.slow
def test_existing_collection_is_evaluated_and_kept(
    generated_set: Path, svc: Cdeq, tmp_path: Path
) -> None:
    data = load_dataset(generated_set)
    submit("mine", [{"id": i, "text": t} for i, t in data.corpus.items()], service=svc)
    report = evaluate(generated_set, collection="mine", service=svc, max_queries=10, seed=1)
    (result,) = report.results
    assert result.condition.name == "existing:mine/dense" and result.judged_queries == 10
    assert report.kept_collections == []
    assert [c.name for c in svc.store.list_collections()] == ["mine"]  # the user's, untouched
    with pytest.raises(InvalidInput, match="give only the modes"):
        evaluate(generated_set, collection="mine", contexts=["generic"], service=svc)
    pytest.importorskip("matplotlib")
    write_plot(report, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_queries_and_judgements_alone_for_an_existing_collection(tmp_path: Path) -> None:
    folder = write_set(tmp_path, [], [{"_id": "q1", "text": "moon"}], [("q1", "any-id", 2)])
    (folder / "corpus.jsonl").unlink()
    data = load_dataset(folder, corpus=False)  # no corpus: judged ids cannot be checked
    assert (data.corpus, data.qrels) == ({}, {"q1": {"any-id": 2}})
    with pytest.raises(InvalidInput, match=r"corpus\.jsonl: missing"):
        load_dataset(folder)


def test_bad_arguments_are_refused_before_any_work(generated_set: Path, svc: Cdeq) -> None:
    for kwargs, message in [
        ({"max_queries": 0}, "max_queries: must be a positive integer"),
        ({"top_k": 5000}, "top_k: must be 1 to 1000"),
        ({"modes": []}, "modes: give at least one"),
        ({"contexts": []}, "contexts: give at least one"),
        ({"collection": "Bad Name!"}, "collection"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            evaluate(generated_set, service=svc, **kwargs)
    assert physical_collections(svc) == []
