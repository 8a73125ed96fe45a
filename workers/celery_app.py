"""The worker's Celery app and its two tasks, thin adapters over `app.ingest` and
`app.rebuild_batches`.

`cdeq.ingest_batch` runs `process_batch` and hands any failure to `batch_failed`, the failure
policy it shares with in-process runs: transient errors are retried with capped backoff,
everything else records the batch's documents as failed, so a job always finishes.
`cdeq.rebuild_batch` runs a rebuild step the same way (`rebuild_failed` gives the rebuild up).
Each run of either holds a lease on its batch (`start_delivery`, `start_rebuild_delivery`),
renewed by a keeper thread that also runs the reconciler; a hard time limit, seen in the
parent process, records the batch as failed.

The one per-process holder (`_runtime`) is set by `create_app` (the settings) and filled in
each pool process on first use (the service, model included: after fork).

A worker started by `cdeq worker` or `celery -A workers.celery_app worker` logs through
`app.logs` (text or JSON, `CDEQ_LOG__FORMAT`), Celery's own lines included, each tagged with
its task's request id, job id and batch (`workers.task_logs`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import (
    celeryd_init,
    setup_logging,
    task_failure,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from celery.utils.log import mlevel

from app.config import Settings
from app.deliveries import end
from app.errors import CdeqError, StoreUnavailable
from app.ingest import (
    Batch,
    batch_failed,
    fail_batch,
    fail_timed_out,
    leased_jobs,
    process_batch,
    start_delivery,
)
from app.jobs import BatchOutcome
from app.jobs.recovery import lease_member
from app.logs import configure_logging, request_id
from app.queue import REQUEST_ID_HEADER, TASK_INGEST_BATCH, TASK_REBUILD_BATCH, make_celery
from app.rebuild_batches import (
    RebuildBatch,
    fail_rebuild_timed_out,
    finish_due,
    queue_finish,
    rebuild_failed,
    run_rebuild_batch,
    start_rebuild_delivery,
)
from app.reconcile import reconcile
from app.service import Cdeq
from workers.task_logs import (
    OUR_TASKS,
    CeleryTaskFilter,
    TaggedRequest,
    Tags,
    fields_of,
    reset_tags,
    set_tags,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


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
    """Use this service in tasks (in-process workers in tests share the caller's). None: the
    in-process worker has stopped, and so does the keeper that used its service (Celery's test
    worker sends no worker_shutdown; a keeper left running would reconcile with a closed
    store, and re-queue other tests' jobs)."""
    with _runtime.lock:
        _runtime.service = service
    if service is None:
        _keeper.shutdown()
        thread = _keeper.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(30)


class _Keeper:
    """A thread in the process that runs tasks: renews the leases of its running batches every
    `heartbeat_s` (it dies with the process, so a dead worker's leases expire) and runs the
    reconciler every `reconcile_interval_s`."""

    def __init__(self) -> None:
        self.held: dict[str, str] = {}  # lease member → token
        # Runs whose end Redis could not record (member → job, index, token, task): their
        # lease stays held until the keeper ends them cleanly and queues the batch again.
        self.deferred: dict[str, tuple[str, int, str, str]] = {}
        self.guard = threading.Lock()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def hold(self, job_id: str, index: int, token: str) -> None:
        with self.guard:
            self.held[lease_member(job_id, index)] = token

    def release(self, job_id: str, index: int) -> None:
        with self.guard:
            member = lease_member(job_id, index)
            if member not in self.deferred:
                self.held.pop(member, None)

    def defer(self, job_id: str, index: int, token: str, task: str) -> None:
        """Redis failed while this run recorded its outcome or its end: a transient fault, not
        a crash. Keep the lease; the keeper ends the run cleanly and queues the batch again
        once Redis answers, so the delivery is never counted as a crash."""
        with self.guard:
            member = lease_member(job_id, index)
            self.held[member] = token
            self.deferred[member] = (job_id, index, token, task)

    def _flush_deferred(self, svc: Cdeq) -> None:
        with self.guard:
            pending = dict(self.deferred)
        for member, (job_id, index, token, task) in pending.items():
            end(svc, job_id, index, token)  # StoreUnavailable: Redis still down, next beat
            with self.guard:
                self.deferred.pop(member, None)
                self.held.pop(member, None)
            try:
                if task == TASK_REBUILD_BATCH:
                    svc.dispatcher.send_rebuild_batch(job_id, index)
                else:
                    svc.dispatcher.send_batch(job_id, index)
            except StoreUnavailable as exc:  # the job is idle now: the reconciler queues it
                log.warning("job %s batch %d: not queued again (%s)", job_id, index, exc)
            else:
                log.warning("job %s batch %d: Redis answers again; queued again", job_id, index)

    def start(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            return
        self.stop.clear()
        self.thread = threading.Thread(target=self._run, name="cdeq-keeper", daemon=True)
        self.thread.start()

    def shutdown(self) -> None:
        self.stop.set()

    def _run(self) -> None:
        svc = worker_service()
        settings = svc.settings.ingest
        next_reconcile = 0.0  # at once: a worker that starts recovers what others left
        while True:
            with self.guard:
                held = dict(self.held)
            try:
                leased_jobs(svc).renew_leases(held, settings.lease_ttl_s)
                self._flush_deferred(svc)
                if time.monotonic() >= next_reconcile:
                    next_reconcile = time.monotonic() + settings.reconcile_interval_s
                    report = reconcile(service=svc)
                    if report.requeued or report.failed_jobs:
                        log.warning("reconciler: %s", report.to_dict())
            except CdeqError as exc:  # Redis down: the next beat tries again
                log.warning("heartbeat/reconcile: %s", exc)
            except Exception:  # never let the keeper die: a live worker must keep its leases
                log.exception("heartbeat/reconcile failed")
            if self.stop.wait(settings.heartbeat_s):
                return


_keeper = _Keeper()


def ingest_batch(self: Task, job_id: str, index: Any, *legacy: Any) -> dict[str, Any]:
    """Celery task `cdeq.ingest_batch(job_id, index)`: one leased run of `process_batch`;
    retry or fail by `batch_failed`. Messages queued by cdeq < 0.2 carry
    (job_id, collection, index, documents) and run without a lease."""
    svc = worker_service()
    if legacy:
        return _run(self, svc, Batch(job_id, str(index), int(legacy[0]), legacy[1]), None)
    return _leased(
        self, svc, job_id, int(index), start_delivery, lambda b, token: _run(self, svc, b, token)
    )


def _leased(
    self: Task,
    svc: Cdeq,
    job_id: str,
    index: int,
    start: Callable[[Cdeq, str, int, str], T | None],
    run: Callable[[T, str], dict[str, Any]],
) -> dict[str, Any]:
    """Take the lease of batch `index` (`start`: None when there is nothing to run), keep it
    renewed by the keeper while `run` runs, and let it go after. An exception that escapes
    leaves the lease to expire: the reconciler queues the batch again, within the cap."""
    token = uuid.uuid4().hex
    try:
        batch = start(svc, job_id, index, token)
    except StoreUnavailable as exc:  # Redis down: come back later (or the reconciler will)
        raise self.retry(exc=exc, countdown=exc.retry_after_s) from exc
    if batch is None:
        return {"state": "skipped"}
    _keeper.hold(job_id, index, token)
    try:
        return run(batch, token)
    finally:
        _keeper.release(job_id, index)


def _run(self: Task, svc: Cdeq, batch: Batch, token: str | None) -> dict[str, Any]:
    """`_run_batch`; every line carries the job's request id (`_tag_task_lines`)."""
    log.info("job %s batch %d: started (request %s)", batch.job_id, batch.index, request_id.get())
    return _run_batch(self, svc, batch, token)


def _request_of(svc: Cdeq, job_id: str) -> str | None:
    """The request id recorded with the job (None when there is none or it can't be read)."""
    try:
        return svc.jobs.status(job_id).request_id
    except CdeqError:
        return None


_tagged_tasks: dict[str, Tags] = {}  # task id → its log tags, from prerun to postrun


@task_prerun.connect
def _tag_task_lines(
    task_id: str | None = None, task: Any = None, args: Any = None, **_: Any
) -> None:
    """Every line written while one of our tasks runs (Celery's "succeeded", "retry" and
    failure lines included) carries its request id, job id, batch, task name and id. The
    request id comes from the message header, else (messages queued before it was sent, or
    by the reconciler of an older version) from the job record."""
    if task is None or task_id is None or getattr(task, "name", None) not in OUR_TASKS:
        return
    fields = fields_of(task.name, task_id, args)
    rid = getattr(task.request, REQUEST_ID_HEADER, None)
    if not isinstance(rid, str) and isinstance(fields.get("job_id"), str):
        rid = _request_of(worker_service(), str(fields["job_id"]))
    _tagged_tasks[task_id] = set_tags(rid, fields)


@task_postrun.connect
def _untag_task_lines(task_id: str | None = None, **_: Any) -> None:
    tags = _tagged_tasks.pop(task_id or "", None)
    if tags is not None:
        reset_tags(tags)


def _run_batch(self: Task, svc: Cdeq, batch: Batch, token: str | None) -> dict[str, Any]:
    splits = svc.embedder.oom_splits if svc.has("embedder") else 0
    limit = svc.settings.ingest.task_soft_time_limit_s
    result, _ = _attempt(
        self,
        svc,
        f"job {batch.job_id} batch {batch.index}",
        (batch.job_id, batch.index, token),
        lambda: process_batch(svc, batch),
        lambda: fail_batch(svc, batch, f"took longer than {limit}s"),
        lambda exc, retries: batch_failed(svc, batch, exc, retries=retries),
    )
    if token is not None and result["state"] != "deferred":
        if not _ended(self, svc, batch.job_id, batch.index, token):
            return {"state": "deferred"}
        if svc.has("embedder") and svc.embedder.oom_splits > splits:
            leased_jobs(svc).count(oom_splits=svc.embedder.oom_splits - splits)
    return result


def _attempt(
    self: Task,
    svc: Cdeq,
    what: str,
    lease: tuple[str, int, str | None],
    run: Callable[[], BatchOutcome | None],
    too_slow: Callable[[], object],
    failed: Callable[[BaseException, int], float | None],
) -> tuple[dict[str, Any], BatchOutcome | None]:
    """One run of a batch, ingest or rebuild, under the same handling: past the soft time
    limit `too_slow` records the failure; any other exception goes to the job kind's policy
    (`failed`: seconds until a retry, during which the lease (job id, index, token) is kept,
    or None once it recorded the failure). Redis gone while recording is no crash: the keeper
    keeps the lease, ends the run and queues the batch again once Redis answers
    (`_Keeper.defer`)."""
    job_id, index, token = lease
    try:
        outcome = run()
    except SoftTimeLimitExceeded:
        too_slow()
        return {"state": "failed"}, None
    except Exception as exc:
        try:
            countdown = failed(exc, self.request.retries)
            if countdown is not None and token is not None:
                end(svc, job_id, index, token, retry_in_s=countdown)
        except StoreUnavailable as lost:  # Redis went away while recording: not a crash
            if token is None:
                raise
            log.warning("%s: %s; Redis is unreachable (%s): ended once it answers", what, exc, lost)
            _keeper.defer(job_id, index, token, self.name)
            return {"state": "deferred"}, None
        if countdown is None:
            return {"state": "failed"}, None
        log.warning("%s: %s; retry in %.0fs", what, exc, countdown)
        # The task is registered with max_retries=None (unbounded for Celery): `failed`, the
        # job kind's policy, is what bounds retries (CDEQ_INGEST__MAX_RETRIES).
        raise self.retry(exc=exc, countdown=countdown) from exc
    if outcome is None:
        return {"state": "already_done"}, None
    return {"state": "done", "succeeded": outcome.succeeded}, outcome


def rebuild_batch(self: Task, job_id: str, index: Any, *legacy: Any) -> dict[str, Any]:
    """Celery task `cdeq.rebuild_batch(job_id, index)`: one leased run of a rebuild step, like
    `ingest_batch`; retry or give the rebuild up by `rebuild_failed`. Messages queued before
    rebuild steps were leased carry (job_id, collection, index, point_ids) and run without."""
    svc = worker_service()
    if legacy:
        batch = RebuildBatch(job_id, str(index), int(legacy[0]), list(legacy[1]))
        return _run_rebuild(self, svc, batch, None)
    return _leased(
        self,
        svc,
        job_id,
        int(index),
        start_rebuild_delivery,
        lambda b, token: _run_rebuild(self, svc, b, token),
    )


def _run_rebuild(self: Task, svc: Cdeq, batch: RebuildBatch, token: str | None) -> dict[str, Any]:
    log.info(
        "rebuild %s batch %d: started (request %s)", batch.job_id, batch.index, request_id.get()
    )
    limit = svc.settings.ingest.task_soft_time_limit_s
    result, outcome = _attempt(
        self,
        svc,
        f"rebuild {batch.job_id} step {batch.index}",
        (batch.job_id, batch.index, token),
        lambda: run_rebuild_batch(svc, batch),
        lambda: rebuild_failed(
            svc, batch, CdeqError(f"a batch took longer than {limit}s"), retries=0
        ),
        lambda exc, retries: rebuild_failed(svc, batch, exc, retries=retries),
    )
    if outcome is not None and token is not None:  # a batch counted: maybe the last one
        queue_finish(svc, batch.job_id)
    elif (  # an unleased (old-format) step that succeeded finishes the rebuild itself
        result["state"] != "failed"
        and token is None
        and (last := finish_due(svc, batch.job_id)) is not None
    ):
        run_rebuild_batch(svc, RebuildBatch(batch.job_id, batch.collection, last))
    if token is not None and result["state"] != "deferred":
        _ended(self, svc, batch.job_id, batch.index, token)
    return result


def _ended(self: Task, svc: Cdeq, job_id: str, index: int, token: str) -> bool:
    """End this run cleanly; False when Redis failed (the keeper ends it later: not a crash)."""
    try:
        end(svc, job_id, index, token)
    except StoreUnavailable as exc:
        log.warning("job %s batch %d: Redis is unreachable (%s); ended later", job_id, index, exc)
        _keeper.defer(job_id, index, token, self.name)
        return False
    return True


def create_app(settings: Settings, *, own_logging: bool = False) -> Celery:
    """The worker's Celery app for these settings, with its two tasks registered. With
    `own_logging` (a worker process of its own: `cdeq worker`, `celery -A workers.celery_app
    worker`), Celery leaves this process's logging to `_setup_logging`; in-process test
    workers keep the caller's."""
    _runtime.settings = settings
    app = make_celery(settings)
    # max_retries=None: Celery never stops a retry on its own (its default is 3); the
    # failure policies stop at CDEQ_INGEST__MAX_RETRIES and record the reason.
    for name, run in ((TASK_INGEST_BATCH, ingest_batch), (TASK_REBUILD_BATCH, rebuild_batch)):
        app.task(name=name, bind=True, Request=TaggedRequest, max_retries=None)(run)
    if own_logging:
        celeryd_init.connect(_early_logging, weak=False, dispatch_uid="cdeq-early-logging")
        setup_logging.connect(_setup_logging, weak=False, dispatch_uid="cdeq-logging")
    return app


def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    """Celery's `setup_logging`: with a receiver, Celery installs no handler or format of its
    own (root, task and multiprocessing loggers all propagate to the root). One handler on
    the root, in `CDEQ_LOG__FORMAT`, at Celery's `--loglevel`; prefork pool processes inherit
    it by fork."""
    fmt = _runtime.settings.log.format if _runtime.settings is not None else "text"
    configure_logging(mlevel(loglevel or logging.WARNING), fmt, filters=[CeleryTaskFilter()])
    logging.captureWarnings(True)


def _early_logging(options: Any = None, **_: Any) -> None:
    """Celery's `celeryd_init`, before it checks the worker's privileges: that check warns (as
    root, say) before `setup_logging`, so the same setup runs here first."""
    _setup_logging(loglevel=(options or {}).get("loglevel"))


@worker_process_init.connect
def _load_model_after_fork(**_: Any) -> None:
    """Warm the model in each pool process (never in the parent: CUDA does not survive fork),
    and start its heartbeat + reconciler thread."""
    if _runtime.settings is None:
        return
    try:
        embedder = worker_service().embedder
        log.info("model %s loaded on %s", embedder.model_id, embedder.device)
    except CdeqError as exc:  # reported again, with its reason, on the first task
        log.error("could not load the model: %s", exc)
    if not _runtime.settings.qdrant.url:  # take the local folder now and hold it
        try:
            worker_service().store  # noqa: B018
        except CdeqError as exc:  # reported again, with its reason, on the first task
            log.error("could not open the local Qdrant folder: %s", exc)
    # After the model: the keeper's first pass must not race the pool process's start-up.
    _keeper.start()


@worker_ready.connect
def _keeper_without_pool_processes(sender: Any = None, **_: Any) -> None:
    """With the solo or threads pool, tasks run in this process: it keeps the leases."""
    from celery.concurrency.prefork import TaskPool as PreforkPool

    if _runtime.settings is None or isinstance(getattr(sender, "pool", None), PreforkPool):
        return
    _keeper.start()


@worker_shutdown.connect
@worker_process_shutdown.connect
def _stop_keeper(**_: Any) -> None:
    _keeper.shutdown()


@task_failure.connect
def _hard_time_limit(
    sender: Any = None, exception: BaseException | None = None, args: Any = None, **_: Any
) -> None:
    """The parent process killed a pool process for the hard time limit: record the batch as
    failed (Celery acks its message), so its job finishes; a rebuild is given up."""
    if not isinstance(exception, TimeLimitExceeded) or _runtime.settings is None:
        return
    task = getattr(sender, "name", None)
    if task not in (TASK_INGEST_BATCH, TASK_REBUILD_BATCH) or not args or len(args) != 2:
        return
    limit = _runtime.settings.ingest.task_time_limit_s
    reason = f"took longer than the hard time limit ({limit}s)"
    svc = Cdeq(_runtime.settings)  # Redis only: the parent never loads the model or the store
    try:
        if task == TASK_REBUILD_BATCH:
            fail_rebuild_timed_out(svc, str(args[0]), int(args[1]), reason)
        else:
            fail_timed_out(svc, str(args[0]), int(args[1]), reason)
    except CdeqError as exc:  # the lease then expires and the reconciler takes over
        log.error("could not record a timed-out batch: %s", exc)
    finally:
        svc.close()


def __getattr__(name: str) -> Any:
    """`celery -A workers.celery_app worker|inspect|events|report` (and Flower) find the app as
    `celery`: built from the settings (environment, `.env`) on first access, never at import."""
    if name == "celery":
        from app.config import load_settings

        app = create_app(load_settings(), own_logging=True)
        globals()["celery"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
