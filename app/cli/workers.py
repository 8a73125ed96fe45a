"""The `cdeq` commands for queue workers: start one, check its health, reconcile leases."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import IO, Any

from app.cli.common import service_from, settings_from
from app.errors import (
    InvalidInput,
    ResourceBusy,
    StoreUnavailable,
)

WORKER_LOCK = ".cdeq-worker.lock"


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
    held = hold_local_folder(settings)  # noqa: F841 (held until this process exits)
    _check_local_folder_free(settings)
    app.worker_main(argv)
    return 0


def hold_local_folder(settings: Any) -> IO[str] | None:
    """Take the worker's lock on its local Qdrant folder for the life of this process (its
    pool process opens the folder itself, later): a second worker on the same folder is
    refused at once (ResourceBusy, exit 5) instead of retrying every batch forever."""
    if settings.qdrant.url or settings.qdrant.path == ":memory:":
        return None
    import fcntl

    folder = Path(settings.qdrant.path)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / WORKER_LOCK, "a+", encoding="utf-8")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise ResourceBusy(
            f"Qdrant local folder {str(folder)!r} is held by another cdeq worker (pid {holder}): "
            "local mode serves one process; run a Qdrant server and set CDEQ_QDRANT__URL to "
            "run several workers"
        ) from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


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
