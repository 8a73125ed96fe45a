"""Retrieval figures of a run against judgements, computed by ir-measures (trec_eval's rules).

nDCG uses the graded judgements as linear gains (trec_eval's `ndcg_cut`, as BEIR reports it);
recall and reciprocal rank count a document as relevant when its grade is at least 1.
"""

from __future__ import annotations

from collections.abc import Mapping

import ir_measures
from ir_measures import RR, R, nDCG

# name shown and stored -> the ir-measures measure
MEASURES = {
    "nDCG@10": nDCG @ 10,
    "R@10": R @ 10,
    "R@100": R @ 100,
    "RR@10": RR @ 10,
}
LABELS = {"nDCG@10": "nDCG@10", "R@10": "Recall@10", "R@100": "Recall@100", "RR@10": "MRR@10"}

Run = Mapping[str, Mapping[str, float]]  # query id -> {document id: score}
Qrels = Mapping[str, Mapping[str, int]]  # query id -> {document id: grade}


def per_query(qrels: Qrels, run: Run) -> dict[str, dict[str, float]]:
    """Each measure of each judged query. A judged query the run has no document for scores 0
    on every measure, as in ir-measures' own mean (plain trec_eval would leave it out)."""
    values: dict[str, dict[str, float]] = {qid: dict.fromkeys(MEASURES, 0.0) for qid in qrels}
    names = {measure: name for name, measure in MEASURES.items()}
    judged_run = {qid: dict(docs) for qid, docs in run.items() if qid in qrels and docs}
    if judged_run:
        qrels_in = {qid: dict(docs) for qid, docs in qrels.items()}
        for metric in ir_measures.iter_calc(list(MEASURES.values()), qrels_in, judged_run):
            values[metric.query_id][names[metric.measure]] = float(metric.value)
    return values


def aggregate(qrels: Qrels, run: Run) -> dict[str, float]:
    """The mean of each measure over every judged query of ``qrels``."""
    values = per_query(qrels, run)
    if not values:
        return dict.fromkeys(MEASURES, 0.0)
    return {name: sum(v[name] for v in values.values()) / len(values) for name in MEASURES}
