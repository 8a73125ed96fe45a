"""The worker's Celery app and its one task, a thin adapter over `app.ingest`.

The task runs `process_batch` and hands any failure to `batch_failed`, the failure policy it
shares with in-process runs: transient errors are retried with capped backoff, everything
else records the batch's documents as failed, so a job always finishes.

The one per-process holder (`_runtime`) is set by `create_app` (the settings) and filled in
each pool process on first use (the service, model included: after fork).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init

from app.config import Settings
from app.errors import CdeqError
from app.ingest import Batch, batch_failed, fail_batch, process_batch
from app.logs import request_id
from app.queue import TASK_INGEST_BATCH, make_celery
from app.service import Cdeq

log = logging.getLogger(__name__)


@dataclass
class _Runtime:
    settings: Settings | None = None
    service: Cdeq | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_runtime = _Runtime()


def worker_service() -> Cdeq:
    """This worker process's service; the model loads here, i.e. after fork."""
    with _runtime.lock:
        if _runtime.service is None:
            if _runtime.settings is None:
                raise RuntimeError("create_app(settings) must run before tasks")
            _runtime.service = Cdeq(_runtime.settings)
        return _runtime.service


def set_worker_service(service: Cdeq | None) -> None:
    """Use this service in tasks (in-process workers in tests share the caller's)."""
    with _runtime.lock:
        _runtime.service = service


def ingest_batch(
    self: Task, job_id: str, collection: str, index: int, documents: list[dict[str, Any]]
) -> dict[str, Any]:
    """Celery task `cdeq.ingest_batch`: one batch through `process_batch`; retry or fail."""
    svc = worker_service()
    batch = Batch(job_id, collection, index, documents)
    token = request_id.set(_request_of(svc, job_id))
    try:
        log.info("job %s batch %d: started (request %s)", job_id, index, request_id.get())
        return _run_batch(self, svc, batch)
    finally:
        request_id.reset(token)


def _request_of(svc: Cdeq, job_id: str) -> str | None:
    """The request id recorded with the job (None when there is none or it can't be read)."""
    try:
        return svc.jobs.status(job_id).request_id
    except CdeqError:
        return None


def _run_batch(self: Any, svc: Cdeq, batch: Batch) -> dict[str, Any]:
    job_id, index = batch.job_id, batch.index
    try:
        outcome = process_batch(svc, batch)
    except SoftTimeLimitExceeded:
        limit = svc.settings.ingest.task_soft_time_limit_s
        fail_batch(svc, batch, f"took longer than {limit}s")
        return {"state": "failed"}
    except Exception as exc:
        countdown = batch_failed(svc, batch, exc, retries=self.request.retries)
        if countdown is None:
            return {"state": "failed"}
        log.warning("job %s batch %d: %s; retry in %.0fs", job_id, index, exc, countdown)
        raise self.retry(exc=exc, countdown=countdown, max_retries=None) from exc
    if outcome is None:
        return {"state": "already_done"}
    return {"state": "done", "succeeded": outcome.succeeded}


def create_app(settings: Settings) -> Celery:
    """The worker's Celery app for these settings, with `cdeq.ingest_batch` registered."""
    _runtime.settings = settings
    app = make_celery(settings)
    app.task(name=TASK_INGEST_BATCH, bind=True)(ingest_batch)
    return app


@worker_process_init.connect
def _load_model_after_fork(**_: Any) -> None:
    """Warm the model in each pool process (never in the parent: CUDA does not survive fork)."""
    if _runtime.settings is None:
        return
    try:
        embedder = worker_service().embedder
        log.info("model %s loaded on %s", embedder.model_id, embedder.device)
    except CdeqError as exc:  # reported again, with its reason, on the first task
        log.error("could not load the model: %s", exc)
