"""The `cdeq` commands for queue workers: start one, check its health, reconcile leases."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

from app.cli.common import service_from, settings_from
from app.errors import (
    InvalidInput,
    StoreUnavailable,
)


def cmd_worker(args: argparse.Namespace) -> int:
    from app.queue import INGEST_QUEUE
    from workers.celery_app import create_app

    settings = settings_from(args)
    app = create_app(settings, own_logging=True)
    argv = [
        "worker",
        "--loglevel",
        args.loglevel,
        "-Q",
        INGEST_QUEUE,
        "--concurrency",
        str(args.concurrency),
        "--pool",
        args.pool,
        "-n",
        f"celery@{socket.gethostname()}",
    ]
    if settings.qdrant.url is None and args.concurrency > 1:
        raise InvalidInput(
            "--concurrency > 1 needs a Qdrant server (CDEQ_QDRANT__URL): local mode is single-process"
        )
    _check_worker_pool(args.pool)
    _check_local_folder_free(settings)
    app.worker_main(argv)
    return 0


def _check_worker_pool(pool: str) -> None:
    """Only the prefork pool enforces the hard time limit (its parent kills a stuck task)."""
    if pool != "prefork":
        raise InvalidInput(
            f"--pool {pool}: this pool enforces no task time limits, so a stuck batch would hold "
            "its worker forever; use --pool prefork (with --concurrency 1 for one process)",
            field="pool",
        )


def _check_local_folder_free(settings: Any) -> None:
    """Refuse to start a worker whose local Qdrant folder another process owns: every batch
    would fail to open it."""
    if settings.qdrant.url:
        return
    from app.store import open_client

    open_client(settings.qdrant).close()  # StoreUnavailable (exit 5) names the folder


def cmd_reconcile(args: argparse.Namespace) -> int:
    from app.reconcile import reconcile

    svc = service_from(args)
    try:
        if not svc.queued:
            raise StoreUnavailable(
                "reconcile works on queued jobs: set CDEQ_REDIS__URL", retry_after_s=0
            )
        report = reconcile(service=svc, force=True)
    finally:
        svc.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"{report.expired_leases} expired leases, {len(report.requeued)} batches re-queued, "
            f"{len(report.failed_jobs)} jobs failed past their deadline"
        )
    return 0


def cmd_worker_health(args: argparse.Namespace) -> int:
    from workers.celery_app import create_app

    app = create_app(settings_from(args))
    name = f"celery@{args.hostname or socket.gethostname()}"
    replies = app.control.inspect(destination=[name], timeout=args.timeout).ping() or {}
    if name in replies:
        print(f"{name}: ok")
        return 0
    print(f"{name}: no answer", file=sys.stderr)
    return 1
