"""The worker's Celery app and its one task. The task only calls the use case and decides
whether to retry: transient store failures (and a context another worker is still
building) are retried with capped exponential backoff; everything else fails the batch."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init

from app.config import Settings
from app.errors import CdeqError, ContextNotReady, StoreUnavailable
from app.ingest import fail_batch, process_batch
from app.queue import TASK_INGEST_BATCH, make_celery
from app.service import Cdeq

log = logging.getLogger(__name__)

_service: Cdeq | None = None
_service_lock = threading.Lock()
_settings: Settings | None = None


def worker_service() -> Cdeq:
    """This worker process's service; the model loads here, i.e. after fork."""
    global _service
    with _service_lock:
        if _service is None:
            if _settings is None:
                raise RuntimeError("create_app(settings) must run before tasks")
            _service = Cdeq(_settings)
        return _service


def set_worker_service(service: Cdeq | None) -> None:
    """Use this service in tasks (in-process workers in tests share the caller's)."""
    global _service
    with _service_lock:
        _service = service


def retry_countdown(retries: int, retry_after_s: float, cap_s: int) -> float:
    """max(server's retry-after, 2^retries) seconds, capped."""
    return float(min(cap_s, max(retry_after_s, 2.0**retries)))


def ingest_batch(self: Task, job_id: str, collection: str, index: int, documents: list[dict[str, Any]]) -> dict[str, Any]:
    """Celery task `cdeq.ingest_batch`: one batch through `process_batch`; retry or fail."""
    svc = worker_service()
    ingest = svc.settings.ingest
    try:
        outcome = process_batch(svc, job_id, collection, index, documents)
    except (StoreUnavailable, ContextNotReady) as exc:
        if self.request.retries >= ingest.max_retries:
            log.error("job %s batch %d: giving up after %d retries: %s", job_id, index, self.request.retries, exc)
            fail_batch(svc, job_id, index, documents, f"failed after {self.request.retries} retries: {exc}")
            return {"state": "failed"}
        countdown = retry_countdown(self.request.retries, exc.retry_after_s, ingest.retry_backoff_max_s)
        log.warning("job %s batch %d: %s; retry in %.0fs", job_id, index, exc, countdown)
        raise self.retry(exc=exc, countdown=countdown, max_retries=ingest.max_retries) from exc
    except SoftTimeLimitExceeded:
        fail_batch(svc, job_id, index, documents, f"took longer than {ingest.task_soft_time_limit_s}s")
        return {"state": "failed"}
    except CdeqError as exc:
        fail_batch(svc, job_id, index, documents, str(exc))
        return {"state": "failed"}
    except Exception as exc:
        # A bug, not a transient fault: count the batch as failed so its job still
        # finishes, and let Celery log the traceback.
        fail_batch(svc, job_id, index, documents, f"internal error: {type(exc).__name__}: {exc}")
        raise
    if outcome is None:
        return {"state": "already_done"}
    return {"state": "done", "succeeded": outcome.succeeded}


def create_app(settings: Settings) -> Celery:
    """The worker's Celery app for these settings, with `cdeq.ingest_batch` registered."""
    global _settings
    _settings = settings
    app = make_celery(settings)
    app.task(name=TASK_INGEST_BATCH, bind=True)(ingest_batch)
    return app


@worker_process_init.connect
def _load_model_after_fork(**_: Any) -> None:
    """Warm the model in each pool process (never in the parent: CUDA does not survive fork)."""
    if _settings is None:
        return
    try:
        embedder = worker_service().embedder
        log.info("model %s loaded on %s", embedder.model_id, embedder.device)
    except CdeqError as exc:  # reported again, with its reason, on the first task
        log.error("could not load the model: %s", exc)
