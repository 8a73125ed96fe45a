"""The `cdeq` command line: a thin layer that parses, calls a use case and maps errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from app.errors import CdeqError, InvalidInput, ModelLoadError, NotFound, StoreUnavailable

EXIT_CODES: dict[type[CdeqError], int] = {
    InvalidInput: 2,
    NotFound: 3,
    ModelLoadError: 4,
    StoreUnavailable: 5,
}


def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    from app.model.tiny import make_checkpoint

    corpus = None
    if args.vocab_corpus:
        corpus = [line for line in Path(args.vocab_corpus).read_text(encoding="utf-8").splitlines() if line.strip()]
    out = make_checkpoint(args.dir, size=args.size, seed=args.seed, corpus=corpus)
    print(f"wrote a random {args.size} cde-small-v1 checkpoint to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdeq", description="Contextual document embeddings (cde-small-v1) with Qdrant."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-tiny-model", help="write a random checkpoint in the official layout (offline)")
    p.add_argument("dir", help="folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=["tiny", "full"], default="tiny",
                   help="tiny: hidden 64, 2 layers, context 16; full: the real 281M architecture")
    p.add_argument("--vocab-corpus", metavar="FILE",
                   help="train the tokenizer on these lines (realistic token counts)")
    p.set_defaults(func=cmd_make_tiny_model)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CdeqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for kind, code in EXIT_CODES.items():
            if isinstance(exc, kind):
                return code
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
