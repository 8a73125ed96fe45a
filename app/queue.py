"""The ingest queue: a Celery app configured from Settings, and how batches are handed to it.

Producers send tasks by name (no worker code imported); workers/ registers the task under
the same name. A message carries only (job id, batch index): the batch's documents (a
rebuild's point ids) are in the job record (`app.jobs`), written once, so nothing is sent
twice, and the reconciler can send any batch again. Without Redis (in-process mode) there is
no queue: `app.ingest` runs batches itself.
"""

from __future__ import annotations

import base64
import json
from typing import Protocol

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from app.config import Settings
from app.errors import StoreUnavailable

TASK_INGEST_BATCH = "cdeq.ingest_batch"
TASK_REBUILD_BATCH = "cdeq.rebuild_batch"
INGEST_QUEUE = "ingest"


def visibility_timeout_s(settings: Settings) -> int:
    """Longer than the longest task plus its longest retry countdown, so a running (unacked)
    task is never handed to a second worker; `ingest.visibility_timeout_s` overrides."""
    ingest = settings.ingest
    if ingest.visibility_timeout_s is not None:
        return ingest.visibility_timeout_s
    return ingest.task_time_limit_s + ingest.retry_backoff_max_s + 300


def make_celery(settings: Settings) -> Celery:
    if not settings.redis.url:
        raise StoreUnavailable("the ingest queue needs Redis: set CDEQ_REDIS__URL", retry_after_s=0)
    app = Celery("cdeq", broker=settings.redis.url, set_as_current=False)
    app.conf.update(
        task_default_queue=INGEST_QUEUE,
        task_routes={
            TASK_INGEST_BATCH: {"queue": INGEST_QUEUE},
            TASK_REBUILD_BATCH: {"queue": INGEST_QUEUE},
        },
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # job records in Redis carry the outcome
        task_acks_late=True,  # ack after the batch is stored…
        task_reject_on_worker_lost=True,  # …and re-queue it if the worker dies mid-batch
        worker_prefetch_multiplier=1,  # one batch at a time per GPU worker
        task_soft_time_limit=settings.ingest.task_soft_time_limit_s,
        task_time_limit=settings.ingest.task_time_limit_s,
        # The last resort only: batch leases and the reconciler re-queue a dead worker's batch
        # within minutes (app.reconcile).
        broker_transport_options={"visibility_timeout": visibility_timeout_s(settings)},
        worker_max_memory_per_child=settings.ingest.worker_max_memory_per_child,
        # A pool process loads the model before it reports ready; Celery's 4 s default kills
        # a replacement process (after a crash or a memory limit) before it can, forever.
        worker_proc_alive_timeout=120.0,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    return app


def queued_messages(client: redis.Redis) -> int:
    """Messages waiting in the broker's `ingest` list (not those a worker holds)."""
    try:
        return int(client.llen(INGEST_QUEUE))
    except redis.RedisError as exc:
        raise StoreUnavailable(f"Redis is unreachable ({exc})", retry_after_s=2.0) from exc


UNACKED = "unacked"  # kombu's Redis transport: messages a worker holds (delivery tag → message)
_SCAN_CHUNK = 1000


def _job_of(raw: bytes | str) -> str | None:
    """The job id (first argument) of one of our task messages, as kombu's Redis transport
    stores it (JSON; the body base64 JSON [args, kwargs, embed]); None for anything else."""
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # the unacked hash: [message, exchange, routing key]
            message = message[0]
        if message.get("headers", {}).get("task") not in (TASK_INGEST_BATCH, TASK_REBUILD_BATCH):
            return None
        args = json.loads(base64.b64decode(message["body"]))[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


def queued_jobs(client: redis.Redis) -> set[str]:
    """The jobs with a message waiting in the `ingest` queue or held (not yet acked) by a
    worker: the reconciler's per-job view, so that a busy queue hides no lost job."""
    jobs: set[str] = set()
    try:
        start = 0
        while True:
            chunk = client.lrange(INGEST_QUEUE, start, start + _SCAN_CHUNK - 1)
            jobs.update(j for raw in chunk if (j := _job_of(raw)) is not None)
            if len(chunk) < _SCAN_CHUNK:
                break
            start += _SCAN_CHUNK
        jobs.update(j for raw in client.hvals(UNACKED) if (j := _job_of(raw)) is not None)
    except redis.RedisError as exc:
        raise StoreUnavailable(f"Redis is unreachable ({exc})", retry_after_s=2.0) from exc
    return jobs


# A message header: the request id of the job's API request, for the worker's log lines
# (its main process logs "Task … received" before any job record is read).
REQUEST_ID_HEADER = "cdeq_request_id"


def _headers(request_id: str | None) -> dict[str, str]:
    return {REQUEST_ID_HEADER: request_id} if request_id else {}


class Dispatcher(Protocol):
    def send_batch(self, job_id: str, index: int, request_id: str | None = None) -> None: ...

    def send_rebuild_batch(
        self, job_id: str, index: int, request_id: str | None = None
    ) -> None: ...


class CeleryDispatcher:
    """Queue each batch as a Celery task on the `ingest` queue."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def send_batch(self, job_id: str, index: int, request_id: str | None = None) -> None:
        self._send(TASK_INGEST_BATCH, job_id, index, request_id)

    def send_rebuild_batch(self, job_id: str, index: int, request_id: str | None = None) -> None:
        """Queue one step of a context rebuild (same queue and workers as ingest); its point
        ids are in the job record."""
        self._send(TASK_REBUILD_BATCH, job_id, index, request_id)

    def _send(self, task: str, job_id: str, index: int, request_id: str | None) -> None:
        try:
            self.app.send_task(
                task,
                args=[job_id, index],
                headers=_headers(request_id),
                queue=INGEST_QUEUE,
                retry=True,
                retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
            )
        except (OperationalError, redis.RedisError, OSError) as exc:
            raise StoreUnavailable(f"could not queue a batch: {exc}", retry_after_s=2.0) from exc
