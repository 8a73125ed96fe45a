"""Retrieval evaluation on a BEIR-layout test set: `evaluate(dataset_dir, service=svc)`."""

from app.evaluation.dataset import TITLE_SEPARATOR, Dataset, join_title, load_dataset
from app.evaluation.metrics import MEASURES, aggregate, per_query
from app.evaluation.report import (
    Condition,
    ConditionResult,
    EvalReport,
    check_plot_available,
    format_table,
    write_json,
    write_plot,
    write_runs,
)
from app.evaluation.runner import chunking_options, evaluate, search_modes

__all__ = [
    "MEASURES",
    "TITLE_SEPARATOR",
    "Condition",
    "ConditionResult",
    "Dataset",
    "EvalReport",
    "aggregate",
    "check_plot_available",
    "chunking_options",
    "evaluate",
    "format_table",
    "join_title",
    "load_dataset",
    "per_query",
    "search_modes",
    "write_json",
    "write_plot",
    "write_runs",
]
