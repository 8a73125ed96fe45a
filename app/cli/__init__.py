"""The `cdeq` command line: a thin layer that parses, calls a use case and maps errors.

Every mistake ends in one clear message on stderr and a documented exit code (`EXIT_CODES`,
docs/cli.md's table); an unexpected exception prints one line and suggests `--debug`, which
shows the traceback. Input files are read as a stream, line by line, never whole.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from app.cli.commands import (
    cmd_collections,
    cmd_config,
    cmd_create_collection,
    cmd_ingest,
    cmd_make_tiny_model,
    cmd_migrate,
    cmd_search,
    cmd_serve,
    cmd_status,
)
from app.cli.common import (
    DEBUG_HELP,
    EXIT_CODES,
    EXIT_INTERRUPTED,
    EXIT_UNEXPECTED,
    MAX_PROBLEMS_SHOWN,
    exit_code,
)
from app.cli.evaluation import add_eval_command
from app.cli.keys import add_keys_commands
from app.cli.lifecycle import add_lifecycle_commands
from app.cli.workers import cmd_reconcile, cmd_worker, cmd_worker_health
from app.errors import (
    CdeqError,
    InvalidInput,
)


# ---- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdeq",
        description="Contextual document embeddings (cde-small-v1) with Qdrant. Configuration: "
        "CDEQ_* environment variables (see docs/configuration.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def model_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model",
            metavar="DIR_OR_HUB_ID",
            help="checkpoint (default: CDEQ_MODEL__NAME or jxm/cde-small-v1)",
        )
        p.add_argument("--device", help="cpu, cuda, cuda:N (default: CUDA when available)")

    p = sub.add_parser(
        "make-tiny-model", help="write a random checkpoint in the official layout (offline)"
    )
    p.add_argument("dir", help="folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--size",
        choices=["tiny", "mid", "full"],
        default="tiny",
        help="tiny: hidden 64, 2 layers (v2: 4), context 16; full: the real architecture "
        "(v1 281M, v2 306M parameters)",
    )
    p.add_argument(
        "--family",
        choices=["v1", "v2"],
        default="v1",
        help="v1: cde-small-v1 (nomic-bert); v2: cde-small-v2 (ModernBERT)",
    )
    p.add_argument(
        "--vocab-corpus",
        metavar="FILE",
        help="train the tokenizer on these lines (realistic token counts)",
    )
    p.set_defaults(func=cmd_make_tiny_model)

    p = sub.add_parser("migrate", help="apply Qdrant migrations (idempotent)")
    p.add_argument("--target", type=int, help="stop at this schema version")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("ingest", help="embed and store documents from a JSON-lines file")
    p.add_argument("file", help='one {"id", "text", "metadata"?} object per line (\'-\' = stdin)')
    p.add_argument("--collection", required=True)
    p.add_argument(
        "--wait", action="store_true", help="with a queue: wait for the job, showing progress"
    )
    p.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print the job outcome as JSON")
    model_opt(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("status", help="show a queued job's state and counts")
    p.add_argument("job")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("search", help="search a collection")
    p.add_argument("name")
    p.add_argument("text")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--filter", help='JSON, e.g. \'{"metadata.lang": "en"}\'')
    p.add_argument(
        "--chunks",
        action="store_true",
        help="list the best chunks (several of one document possibly), not documents",
    )
    p.add_argument(
        "--mode",
        choices=["dense", "sparse", "hybrid"],
        help="ranking (default CDEQ_SEARCH__MODE): dense vectors, BM25, or both fused",
    )
    p.add_argument("--json", action="store_true")
    model_opt(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "create-collection", help="create an empty collection with an explicit context"
    )
    p.add_argument("name")
    p.add_argument(
        "--context",
        metavar="FILE",
        help="context corpus, one text per line (default: the generic context)",
    )
    model_opt(p)
    p.set_defaults(func=cmd_create_collection)

    p = sub.add_parser("collections", help="list collections with sizes and context versions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_collections)

    p = sub.add_parser("worker", help="start a Celery ingest worker (one per GPU)")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    p.add_argument("--loglevel", default="INFO")
    model_opt(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "reconcile",
        help="re-queue batches of dead workers and jobs never fully queued (workers do this "
        "every CDEQ_INGEST__RECONCILE_INTERVAL_S)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("worker-health", help="exit 0 when this host's worker answers a ping")
    p.add_argument("--hostname", help="worker host name (default: this host)")
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(func=cmd_worker_health)

    p = sub.add_parser(
        "config", help="print the effective settings (environment, .env, defaults); secrets masked"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("serve", help="start the HTTP API (OpenAI-compatible /v1/embeddings)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--open",
        action="store_true",
        help="allow serving without API keys on a non-loopback address",
    )
    model_opt(p)
    p.set_defaults(func=cmd_serve)

    add_lifecycle_commands(sub, model_opt)
    add_eval_command(sub, model_opt)
    add_keys_commands(sub)

    # --debug is accepted before or after the command name, by every command.
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    for command in sub.choices.values():
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
        )
    _no_abbreviations(parser)
    return parser


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """Refuse abbreviated flags in every parser (else `--mode x` is read as `--model x`)."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _no_abbreviations(child)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _report(exc: CdeqError) -> None:
    problems = exc.problems if isinstance(exc, InvalidInput) else []
    if len(problems) <= 1:
        print(f"error: {exc}", file=sys.stderr)
        return
    print(f"error: {len(problems)} problems:", file=sys.stderr)
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        print(f"  {problem}", file=sys.stderr)
    if len(problems) > MAX_PROBLEMS_SHOWN:
        print(f"  … and {len(problems) - MAX_PROBLEMS_SHOWN} more", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    # Messages may quote any text a user sent (ids, file names): never fail on printing them.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    level = os.environ.get("CDEQ_LOG_LEVEL", "WARNING").upper()
    if level not in LOG_LEVELS:
        print(
            f"error: CDEQ_LOG_LEVEL: unknown level {level!r} (use one of {', '.join(LOG_LEVELS)})",
            file=sys.stderr,
        )
        return EXIT_CODES[InvalidInput]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        code = func(args)
        sys.stdout.flush()  # a closed pipe (`cdeq … | head`) shows here, not at exit
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except CdeqError as exc:
        if debug:
            traceback.print_exc()
        _report(exc)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug or an unforeseen failure: one line, the rest on demand
        if debug:
            raise
        message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print(
            f"error: unexpected {type(exc).__name__}{': ' + message if message else ''} "
            "(run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED


def _quiet_stdout() -> None:
    """The reader of stdout went away (`| head`): nothing more to say, and no error from
    Python flushing stdout at exit either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
