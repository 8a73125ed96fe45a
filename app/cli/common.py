"""What every `cdeq` command shares: settings and service from the arguments, exit codes,
progress bars and the printed job outcome."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from app.errors import (
    CdeqError,
    Conflict,
    ContextNotReady,
    InvalidInput,
    ModelLoadError,
    NotFound,
    ResourceBusy,
    StoreUnavailable,
)

DEBUG_HELP = "show the traceback of an unexpected error"
EXIT_UNEXPECTED = 1  # also: `cdeq ingest` when some documents were not stored
EXIT_CODES: dict[type[CdeqError], int] = {
    InvalidInput: 2,  # bad input, arguments, files or settings (argparse's usage errors too)
    NotFound: 3,
    ModelLoadError: 4,
    StoreUnavailable: 5,
    ContextNotReady: 5,
    Conflict: 6,  # a rebuild already runs; or ModelMismatch: another model embedded it
    ResourceBusy: 5,  # a local Qdrant folder or the port held by another process
}
EXIT_INTERRUPTED = 130
MAX_PROBLEMS_SHOWN = 100


def exit_code(exc: CdeqError) -> int:
    for kind, code in EXIT_CODES.items():
        if isinstance(exc, kind):
            return code
    return EXIT_UNEXPECTED


def settings_from(args: argparse.Namespace) -> Any:
    from app.config import load_settings

    settings = load_settings()
    if getattr(args, "model", None):
        settings.model.name = args.model
    if getattr(args, "device", None):
        settings.model.device = args.device
    return settings


def service_from(args: argparse.Namespace) -> Any:
    from app.service import Cdeq

    return Cdeq(settings_from(args))


def progress_bar(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="doc", file=sys.stderr, disable=None)


def print_job(status: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(status.to_dict(), indent=2))
        return
    chunks = getattr(status, "chunks", 0)
    stored = f" ({chunks} chunks)" if chunks else ""
    truncated = f", {status.truncated} truncated" if status.truncated else ""
    print(
        f"job {status.id} [{status.state}] {status.collection}: {status.succeeded}/{status.total} "
        f"stored{stored}, {status.failed} failed{truncated}"
    )
    for doc_id, reason in list(status.errors.items())[:20]:
        print(f"  error   {doc_id}: {reason}")
    for doc_id, reason in list(status.warnings.items())[:20]:
        print(f"  warning {doc_id}: {reason}")
    hidden = max(0, len(status.errors) - 20) + max(0, len(status.warnings) - 20)
    if hidden:
        print(f"  … {hidden} more (use --json)")
