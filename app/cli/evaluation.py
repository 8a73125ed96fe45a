"""`cdeq eval DATASET_DIR`: retrieval figures of a BEIR-layout test set, per condition."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.cli.common import service_from
from app.errors import InvalidInput


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_eval_command(sub: Any, model_opt: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser(
        "eval",
        help="measure retrieval quality (nDCG@10, Recall@10/100, MRR@10) on a BEIR-layout set",
        description="Ingest DATASET_DIR/corpus.jsonl into throw-away collections (one per "
        "context and chunking), run every judged query of queries.jsonl in every mode, and "
        "score the runs against qrels/SPLIT.tsv. The collections are dropped at the end.",
    )
    p.add_argument("dataset", metavar="DATASET_DIR", help="corpus.jsonl, queries.jsonl, qrels/")
    p.add_argument(
        "--contexts",
        type=_csv,
        default=["corpus"],
        metavar="LIST",
        help="comma-separated: corpus (the first ingest's own sample), generic (the built-in "
        "generic context), or FILE (context texts, one per line); default corpus",
    )
    p.add_argument(
        "--modes",
        type=_csv,
        default=["dense"],
        metavar="LIST",
        help="comma-separated search modes (this build's: see the error of an unknown one); "
        "default dense",
    )
    p.add_argument(
        "--chunking",
        type=_csv,
        metavar="LIST",
        help="comma-separated chunking settings to compare (auto, off), where the build has them",
    )
    p.add_argument(
        "--collection",
        metavar="NAME",
        help="evaluate this existing collection instead (no ingest; --modes only)",
    )
    p.add_argument("--split", default="test", help="qrels/SPLIT.tsv (default test)")
    p.add_argument("--max-queries", type=int, metavar="N", help="a seeded sample of N queries")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the query sample and the context (0)"
    )
    p.add_argument("--top-k", type=int, default=100, help="hits per query (default 100)")
    p.add_argument("--json", metavar="FILE", help="write every figure, the settings and model")
    p.add_argument("--runs", metavar="DIR", help="write one TREC run file per condition")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of nDCG@10 (needs matplotlib)")
    p.add_argument("--keep", action="store_true", help="keep the throw-away collections")
    model_opt(p)
    p.set_defaults(func=cmd_eval)


def _check_output(path: str | None, what: str) -> None:
    if path is None:
        return
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise InvalidInput(f"{what}: folder {str(parent)!r} does not exist", field=what)
    if Path(path).is_dir():
        raise InvalidInput(f"{what}: {path!r} is a folder; give a file name", field=what)


class _Bars:
    """One tqdm bar per stage, the previous one closed when the next stage starts."""

    def __init__(self) -> None:
        self.stage = ""
        self.bar: Any = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage != self.stage or self.bar is None:
            self.close()
            unit = "query" if stage.startswith("queries") else "doc"
            self.bar = tqdm(total=total, desc=stage, unit=unit, file=sys.stderr, disable=None)
            self.stage = stage
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_eval(args: argparse.Namespace) -> int:
    from app.evaluation import (
        check_plot_available,
        evaluate,
        format_table,
        write_json,
        write_plot,
        write_runs,
    )

    _check_output(args.json, "--json")
    _check_output(args.plot, "--plot")
    if args.runs and Path(args.runs).exists() and not Path(args.runs).is_dir():
        raise InvalidInput(f"--runs: {args.runs!r} is a file; give a folder", field="runs")
    if args.plot:
        check_plot_available()  # before the long part, not after it
    svc = service_from(args)
    bars = _Bars()
    try:
        report = evaluate(
            args.dataset,
            service=svc,
            contexts=args.contexts,
            modes=args.modes,
            chunking=args.chunking,
            collection=args.collection,
            split=args.split,
            max_queries=args.max_queries,
            seed=args.seed,
            top_k=args.top_k,
            keep=args.keep,
            on_progress=bars,
        )
    finally:
        bars.close()
        svc.close()
    print(
        f"{report.dataset} ({report.split}): {report.documents} documents, "
        f"{report.queries_evaluated} of {report.queries_judged} judged queries "
        f"({report.unjudged_skipped} without judgement skipped); {report.wall_s:.1f}s"
    )
    print(format_table(report))
    for r in report.results:
        if r.documents_failed:
            print(
                f"warning: {r.condition.name}: {r.documents_failed} documents were not stored",
                file=sys.stderr,
            )
    if report.kept_collections:
        print(f"kept collections: {', '.join(report.kept_collections)}")
    if args.json:
        write_json(report, args.json)
    if args.runs:
        write_runs(report, args.runs)
    if args.plot:
        write_plot(report, args.plot)
    return 0
