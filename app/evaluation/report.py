"""The outcome of an evaluation: figures per condition, and how to print and save them (table,
JSON, TREC run files, a bar chart)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import InvalidInput
from app.evaluation.metrics import LABELS, MEASURES


@dataclass(frozen=True)
class Condition:
    """One way of building and searching the collection: its context, chunking and mode."""

    context: str  # "corpus", "generic", "file:NAME" or "existing:COLLECTION"
    mode: str  # a search mode: "dense", and "sparse" / "hybrid" where they exist
    chunking: str | None = None  # None = the service's own setting

    @property
    def name(self) -> str:
        parts = [self.context]
        if self.chunking is not None:
            parts.append(f"chunking-{self.chunking}")
        parts.append(self.mode)
        return "/".join(parts)

    @property
    def tag(self) -> str:
        """The name as one token: the run tag and the run file's name."""
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.name.replace("/", "."))


@dataclass
class ConditionResult:
    condition: Condition
    collection: str
    metrics: dict[str, float]  # keys of MEASURES
    judged_queries: int
    documents_stored: int = 0
    documents_failed: int = 0
    ingest_s: float = 0.0
    search_s: float = 0.0
    run: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # qid -> ranked hits

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.condition.name,
            "tag": self.condition.tag,
            "context": self.condition.context,
            "chunking": self.condition.chunking,
            "mode": self.condition.mode,
            "collection": self.collection,
            "documents_stored": self.documents_stored,
            "documents_failed": self.documents_failed,
            "judged_queries": self.judged_queries,
            "metrics": dict(self.metrics),
            "ingest_s": round(self.ingest_s, 3),
            "search_s": round(self.search_s, 3),
        }


@dataclass
class EvalReport:
    dataset: str
    split: str
    documents: int
    queries_in_file: int
    queries_judged: int
    unjudged_skipped: int
    queries_evaluated: int
    results: list[ConditionResult]
    settings: dict[str, Any]
    model: dict[str, Any]
    kept_collections: list[str]
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "documents": self.documents,
            "queries": {
                "in_file": self.queries_in_file,
                "judged": self.queries_judged,
                "unjudged_skipped": self.unjudged_skipped,
                "evaluated": self.queries_evaluated,
            },
            "measures": {name: str(measure) for name, measure in MEASURES.items()},
            "conditions": [r.to_dict() for r in self.results],
            "settings": self.settings,
            "model": self.model,
            "kept_collections": self.kept_collections,
            "wall_s": round(self.wall_s, 3),
        }


def format_table(report: EvalReport) -> str:
    """One line per condition: the four figures and the number of judged queries."""
    width = max([len("condition"), *(len(r.condition.name) for r in report.results)])
    head = f"{'condition':<{width}}  " + "  ".join(f"{LABELS[m]:>10}" for m in MEASURES)
    lines = [head + f"  {'judged':>6}"]
    for r in report.results:
        figures = "  ".join(f"{r.metrics[m]:>10.4f}" for m in MEASURES)
        lines.append(f"{r.condition.name:<{width}}  {figures}  {r.judged_queries:>6d}")
    return "\n".join(lines)


def write_json(report: EvalReport, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")


def write_runs(report: EvalReport, folder: str | Path) -> list[Path]:
    """One TREC run file per condition, `<tag>.trec`: `qid Q0 docid rank score tag` lines.

    Scores are written exactly (Python's shortest round-trip form), so figures recomputed from
    these files equal the report's."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for r in report.results:
        path = out / f"{r.condition.tag}.trec"
        with path.open("w", encoding="utf-8") as stream:
            for qid, hits in r.run.items():
                for rank, (doc_id, score) in enumerate(hits, start=1):
                    stream.write(f"{qid} Q0 {doc_id} {rank} {score!r} {r.condition.tag}\n")
        written.append(path)
    return written


def check_plot_available() -> None:
    """InvalidInput when matplotlib (the optional extra `plot`) is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InvalidInput(
            "--plot: needs matplotlib, which is the optional extra `plot`: "
            "pip install 'cdeq[plot]' (or pip install matplotlib)",
            field="plot",
        ) from None


def write_plot(report: EvalReport, path: str | Path) -> None:
    """A bar chart of nDCG@10 per condition (PNG, or any format matplotlib knows by suffix)."""
    check_plot_available()
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    names = [r.condition.name for r in report.results]
    values = [r.metrics["nDCG@10"] for r in report.results]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names) + 2), 4.0))
    try:
        bars = ax.bar(range(len(names)), values, color="#4c72b0")
        ax.bar_label(bars, fmt="%.3f")
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("nDCG@10")
        ax.set_title(f"{Path(report.dataset).name} ({report.queries_evaluated} queries)")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
