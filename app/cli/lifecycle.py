"""The `cdeq` commands of the context lifecycle and the collection verbs."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from app.cli.common import DEBUG_HELP, print_job, progress_bar, service_from
from app.cli.inputs import read_text_lines
from app.errors import (
    InvalidInput,
)


# ---- context lifecycle and collection verbs ---------------------------------------------------
def _print_context(info: Any) -> None:
    built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.built_at))
    print(f"{info.collection}: context v{info.version} ({info.source}, {info.trigger or '-'})")
    print(f"  model          {info.model_id} (fingerprint {info.fingerprint[:12] or '-'})")
    print(f"  built at       {built}")
    print(
        f"  sample         {info.sample_size} texts, {info.distinct_documents} distinct "
        f"documents, {info.sampled_chunks} distinct chunks"
    )
    print(f"  points         {info.points_at_build} at build, {info.points_now} now")
    print(f"  growth         {info.growth:.2f}")
    sparse = "yes (bm25)" if info.sparse else f"no (`cdeq context rebuild {info.collection}`)"
    print(f"  sparse vectors {sparse}")
    if info.drift is not None:
        print(f"  drift          {info.drift:.4f}")
    kept = ", ".join(f"v{v}" for v in info.previous_versions) or "none"
    print(f"  kept versions  {kept}")
    if info.rebuild:
        r = info.rebuild
        print(f"  rebuilding     v{r['target_version']} ({r['trigger']}), job {r['job_id']}")
    if info.auto_rebuild_due:
        print(f"  auto rebuild   due ({info.auto_rebuild_due})")


def cmd_context_show(args: argparse.Namespace) -> int:
    from app.lifecycle import context_info

    svc = service_from(args)
    try:
        info = context_info(
            args.name, drift=args.drift, drift_sample=args.drift_sample, seed=args.seed, service=svc
        )
    finally:
        svc.close()
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
    else:
        _print_context(info)
    return 0


def cmd_context_rebuild(args: argparse.Namespace) -> int:
    from app.ingest import job_status
    from app.lifecycle import rebuild_context

    texts = read_text_lines(args.context, "--context") if args.context else None
    svc = service_from(args)
    try:
        bar = progress_bar(0, f"rebuilding {args.name}") if not svc.queued else None
        try:
            job_id = rebuild_context(
                args.name,
                sample_size=args.sample_size,
                seed=args.seed,
                context_texts=texts,
                service=svc,
                on_progress=(lambda done, total: _bar_to(bar, done, total)) if bar else None,
            )
        finally:
            if bar is not None:
                bar.close()
        if svc.queued and not args.wait:
            print(job_id)
            return 0
        status = job_status(job_id, service=svc)
        if svc.queued:
            print(f"queued rebuild job {job_id}", file=sys.stderr)
            bar = progress_bar(status.total, f"job {job_id[:8]}")
            try:
                while not status.finished:
                    time.sleep(args.poll)
                    status = job_status(job_id, service=svc)
                    bar.update(status.succeeded - bar.n)
            finally:
                bar.close()
        print_job(status, args.json)
        return 0 if status.state == "done" else 1
    finally:
        svc.close()


def _bar_to(bar: Any, done: int, total: int) -> None:
    bar.total = total
    bar.update(done - bar.n)


def cmd_context_rollback(args: argparse.Namespace) -> int:
    from app.lifecycle import rollback

    svc = service_from(args)
    try:
        version = rollback(args.name, service=svc)
    finally:
        svc.close()
    print(f"{args.name}: context v{version} is live again")
    return 0


def cmd_context_prune(args: argparse.Namespace) -> int:
    from app.lifecycle import prune

    svc = service_from(args)
    try:
        removed = prune(args.name, service=svc)
    finally:
        svc.close()
    shown = ", ".join(f"v{v}" for v in removed) or "nothing"
    print(f"{args.name}: removed {shown}")
    return 0


def cmd_drop_collection(args: argparse.Namespace) -> int:
    from app.lifecycle import drop_collection

    if not args.yes:
        raise InvalidInput(
            f"drop-collection deletes {args.name!r} and every version of it: add --yes",
            field="yes",
        )
    svc = service_from(args)
    try:
        drop_collection(args.name, service=svc, force=args.force)
    finally:
        svc.close()
    print(f"dropped {args.name}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from app.query import delete_documents

    ids = list(args.ids)
    if args.ids_file:
        ids.extend(read_text_lines(args.ids_file, "--ids-file"))
    if not ids:
        raise InvalidInput("give document ids, or --ids-file FILE (one id per line)", field="ids")
    svc = service_from(args)
    try:
        deleted = delete_documents(args.name, ids, service=svc)
    finally:
        svc.close()
    print(f"deleted {deleted} of {len(set(ids))} documents from {args.name}")
    return 0


def add_lifecycle_commands(sub: Any, model_opt: Callable[[argparse.ArgumentParser], None]) -> None:
    """`cdeq context show|rebuild|rollback|prune`, `cdeq drop-collection`, `cdeq delete`."""
    ctx = sub.add_parser("context", help="inspect, rebuild, roll back or prune a context")
    verbs = ctx.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("show", help="the live context: version, source, growth, drift")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.add_argument("--drift", action="store_true", help="compute drift (one stage-1 pass)")
    p.add_argument("--drift-sample", type=int, help="stored texts sampled for drift (64)")
    p.add_argument("--seed", type=int, help="sampling seed (CDEQ_INGEST__CONTEXT_SEED)")
    model_opt(p)
    p.set_defaults(func=cmd_context_show)

    p = verbs.add_parser("rebuild", help="rebuild the context from the whole collection")
    p.add_argument("name")
    p.add_argument("--context", metavar="FILE", help="context texts, one per line")
    p.add_argument("--sample-size", type=int, help="stored texts sampled for stage 1 (512)")
    p.add_argument("--seed", type=int, help="sampling seed (CDEQ_INGEST__CONTEXT_SEED)")
    p.add_argument("--wait", action="store_true", help="with a queue: wait until swapped")
    p.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print the job outcome as JSON")
    model_opt(p)
    p.set_defaults(func=cmd_context_rebuild)

    p = verbs.add_parser("rollback", help="make the previous kept version live again")
    p.add_argument("name")
    model_opt(p)
    p.set_defaults(func=cmd_context_rollback)

    p = verbs.add_parser("prune", help="delete every version but the live one")
    p.add_argument("name")
    p.set_defaults(func=cmd_context_prune)
    for verb in verbs.choices.values():  # `cdeq context show NAME --debug` too
        verb.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
        )

    p = sub.add_parser("drop-collection", help="delete a collection and all its versions")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="confirm")
    p.add_argument(
        "--force", action="store_true", help="also when a rebuild runs: cancel it (else: exit 6)"
    )
    p.set_defaults(func=cmd_drop_collection)

    p = sub.add_parser("delete", help="delete documents by id")
    p.add_argument("name")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--ids-file", metavar="FILE", help="one document id per line")
    p.set_defaults(func=cmd_delete)
