"""The batching queue of the model server: admission under a token bound, parts of callers'
texts, and the model threads that pack them into shared forwards (see `app.serving`)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from app.config import ServeSettings
from app.errors import Overloaded
from app.model import Embeddings

log = logging.getLogger(__name__)

QUERY, DOCUMENT = "query", "document"

# One stage-2 call of the model: (input type, texts, dataset embeddings) → its rows.
Forward = Callable[[str, list[str], Any], Embeddings]


class ServeObserver(Protocol):
    """Receives what the server measures (the API turns it into Prometheus metrics)."""

    def batch(self, rows: int, tokens: int, waits_s: Sequence[float], forward_s: float) -> None: ...

    def cache(self, hits: int, misses: int) -> None: ...

    def rejected(self) -> None: ...


@dataclass(eq=False)
class Part:
    """Some texts of one caller, queued for one forward."""

    key: tuple[str, str]  # (context key, input type): what a packed forward shares
    texts: list[str]
    dataset: Any
    cost: int  # tokens, prefix included
    enqueued: float
    future: Future[Embeddings] = field(default_factory=Future)


class Batcher:
    """Admits callers' texts under `max_queue_tokens` and runs them, packed, on
    `model_threads` threads through `forward`."""

    def __init__(
        self,
        forward: Forward,
        settings: ServeSettings,
        max_batch_tokens: int,
        observers: list[ServeObserver],
        *,
        cpu: bool = False,
    ) -> None:
        self.forward = forward
        # On a CPU, forwards running at once share the cores instead of each asking for all
        # of them (see `_cpu_threads`); on a GPU the CPU threads only launch kernels.
        self.cpu_cores = torch.get_num_threads() if cpu else 0
        self.max_batch = settings.max_batch
        self.max_batch_tokens = max_batch_tokens
        self.max_queue_tokens = settings.max_queue_tokens
        self.max_wait_s = settings.max_wait_ms / 1000
        self.model_threads = settings.model_threads
        self.observers = observers
        self._cond = threading.Condition()
        self._pending: deque[Part] = deque()
        self._queued_tokens = 0  # admitted and not yet finished: waiting or running
        self._busy = 0  # model threads running a forward
        self._rate = 0.0  # tokens per second of recent forwards (for Retry-After)
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._local = threading.local()

    @property
    def queued_tokens(self) -> int:
        """Tokens (prefix included) admitted and not finished yet."""
        return self._queued_tokens

    @property
    def queued_requests(self) -> int:
        """Parts waiting for a forward (not counting those running)."""
        return len(self._pending)

    # ---- admission ----------------------------------------------------------------------
    @contextmanager
    def waiting_for_room(self) -> Iterator[None]:
        """In this thread, wait for room in the queue instead of getting Overloaded (for work
        already accepted, such as the batches of an in-process ingest job)."""
        before = getattr(self._local, "wait", False)
        self._local.wait = True
        try:
            yield
        finally:
            self._local.wait = before

    def check_room(self) -> None:
        """Overloaded when the queue is full now (a cheap check before accepting work)."""
        with self._cond:
            if self._queued_tokens >= self.max_queue_tokens:
                raise self._overloaded(0)

    def _overloaded(self, cost: int) -> Overloaded:
        for observer in self.observers:
            observer.rejected()
        backlog = self._queued_tokens + cost
        seconds = backlog / self._rate if self._rate > 0 else 1.0
        return Overloaded(
            f"the embedding queue is full ({self._queued_tokens} of {self.max_queue_tokens} "
            f"tokens waiting or running; this request needs {cost}); retry after the "
            "Retry-After delay",
            retry_after_s=min(60.0, max(1.0, seconds)),
        )

    def admit(self, cost: int) -> None:
        """Count `cost` tokens in, or raise Overloaded (or wait, in `waiting_for_room`).
        A request larger than the whole bound is admitted when the queue is empty."""
        wait = getattr(self._local, "wait", False)
        with self._cond:
            while True:
                if self._closed:
                    raise Overloaded("the model server is shutting down", retry_after_s=5.0)
                fits = self._queued_tokens + cost <= self.max_queue_tokens
                if fits or self._queued_tokens == 0:
                    self._queued_tokens += cost
                    return
                if not wait:
                    raise self._overloaded(cost)
                self._cond.wait(1.0)

    def release(self, cost: int) -> None:
        with self._cond:
            self._queued_tokens -= cost
            self._cond.notify_all()

    # ---- queueing -----------------------------------------------------------------------
    def submit(
        self, texts: list[str], costs: list[int], dataset: Any, key: tuple[str, str]
    ) -> list[Future[Embeddings]]:
        """Admit and queue checked texts (`costs`: tokens each, prefix included) for packed
        forwards; one future per part, in order. Cancelling a future that has not started
        drops its part and frees its tokens. Raises Overloaded when the queue is full."""
        self.admit(sum(costs))
        parts = self._split(texts, costs, dataset, key)
        with self._cond:
            while len(self._threads) < self.model_threads:
                thread = threading.Thread(
                    target=self._loop, name=f"cdeq-model-server-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
            self._pending.extend(parts)
            self._cond.notify_all()
        return [part.future for part in parts]

    def _split(
        self, texts: list[str], costs: list[int], dataset: Any, key: tuple[str, str]
    ) -> list[Part]:
        """Cut a large call into parts of at most one packed forward each, so the queries of
        other callers can run between them."""
        now = time.monotonic()
        parts: list[Part] = []
        start, tokens = 0, 0
        for i, cost in enumerate(costs):
            full = i - start >= self.max_batch or tokens + cost > self.max_batch_tokens
            if i > start and full:
                parts.append(Part(key, texts[start:i], dataset, tokens, now))
                start, tokens = i, 0
            tokens += cost
        parts.append(Part(key, texts[start:], dataset, tokens, now))
        return parts

    # ---- the model threads --------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    for part in self._pending:
                        part.future.cancel()
                    self._pending.clear()
                    return
                first = self._pending[0]
                deadline = first.enqueued + self.max_wait_s
                # Waiting for more only pays while another forward keeps the model busy: an
                # idle model starts at once (no max_wait at one client).
                while self._busy and not self._closed and not self._full(first.key):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = self.take(first.key)
                if batch:
                    self._busy += 1
            if batch:
                try:
                    self._run(batch)
                finally:
                    with self._cond:
                        self._busy -= 1

    def _full(self, key: tuple[str, str]) -> bool:
        rows = tokens = 0
        for part in self._pending:
            if part.key == key:
                rows += len(part.texts)
                tokens += part.cost
        return rows >= self.max_batch or tokens >= self.max_batch_tokens

    def take(self, key: tuple[str, str]) -> list[Part]:
        """The oldest waiting parts with this key that fit one forward (always the first);
        parts whose caller gave up are dropped here. Called with the lock held.

        A thread takes only its share of the waiting rows, rounded up, so the other model
        threads compute the rest at the same time instead of idling behind one large forward:
        on a GPU the share is rows ÷ idle threads (a busy GPU wants large batches); on a CPU,
        where a larger batch is no faster per row, it is rows ÷ model threads, which also
        keeps the threads' batches even under steady load (a thread that frees up finds the
        other half waiting), so no caller waits behind a forward twice as large as needed."""
        threads = self.model_threads if self.cpu_cores else self.model_threads - self._busy
        if threads > 1:
            waiting = sum(len(p.texts) for p in self._pending if p.key == key)
            share = min(self.max_batch, math.ceil(waiting / threads))
        else:
            share = self.max_batch
        taken: list[Part] = []
        kept: deque[Part] = deque()
        rows = tokens = 0
        while self._pending:
            part = self._pending.popleft()
            if part.key != key or rows >= share:
                kept.append(part)
                continue
            fits = rows + len(part.texts) <= self.max_batch
            fits = fits and tokens + part.cost <= self.max_batch_tokens
            if taken and not fits:
                kept.append(part)
                continue
            if not part.future.set_running_or_notify_cancel():  # cancelled: its caller left
                self._queued_tokens -= part.cost
                self._cond.notify_all()
                continue
            taken.append(part)
            rows += len(part.texts)
            tokens += part.cost
        self._pending = kept
        return taken

    def _cpu_threads(self) -> None:
        """Before a forward on a CPU: all cores when it runs alone, else its share of them.
        Two forwards that each spread over every core fight over them (OpenMP teams
        oversubscribed); measured on 2 cores, 32 clients: 1.3× → 1.5× the per-request
        throughput, while a lone request keeps both cores."""
        if not self.cpu_cores:
            return
        with self._cond:
            running = self._busy
        threads = max(1, self.cpu_cores // max(1, min(running, self.model_threads)))
        if getattr(self._local, "threads", None) != threads:
            # A thread's first parallel work resets its team to the process default, so let
            # that happen first (get_num_threads does), then set this thread's team size.
            torch.get_num_threads()
            torch.set_num_threads(threads)
            self._local.threads = threads
            if threads != self.cpu_cores:
                # torch.set_num_threads also becomes the team size of every thread that starts
                # its first parallel work later (a request thread building a context, say):
                # set it back to all cores from a short-lived thread, whose own team it is.
                restore = threading.Thread(target=torch.set_num_threads, args=(self.cpu_cores,))
                restore.start()
                restore.join()

    def _run(self, batch: list[Part]) -> None:
        kind = batch[0].key[1]
        texts = [t for part in batch for t in part.texts]
        self._cpu_threads()
        started = time.perf_counter()
        try:
            out = self.forward(kind, texts, batch[0].dataset)
        except Exception as exc:
            if len(batch) == 1:
                self._finish(batch[0], error=exc)
                return
            log.warning("a packed forward failed (%s); running its requests one by one", exc)
            for part in batch:
                try:
                    self._finish(part, self.forward(kind, part.texts, part.dataset))
                except Exception as one:
                    self._finish(part, error=one)
            return
        self.measured(
            len(texts),
            sum(p.cost for p in batch),
            [time.monotonic() - p.enqueued for p in batch],
            time.perf_counter() - started,
        )
        row = 0
        for part in batch:
            n = len(part.texts)
            self._finish(
                part,
                Embeddings(
                    out.vectors[row : row + n],
                    out.token_counts[row : row + n],
                    out.truncated[row : row + n],
                ),
            )
            row += n

    def _finish(
        self, part: Part, out: Embeddings | None = None, *, error: BaseException | None = None
    ) -> None:
        if error is not None:
            part.future.set_exception(error)
        else:
            part.future.set_result(out)  # type: ignore[arg-type]
        self.release(part.cost)

    def measured(self, rows: int, tokens: int, waits: list[float], forward_s: float) -> None:
        """A forward ran: update the rate behind Retry-After, tell the observers."""
        if forward_s > 0:
            rate = tokens / forward_s
            self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate
        for observer in self.observers:
            observer.batch(rows, tokens, waits, forward_s)

    # ---- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        """Stop the model threads; waiting callers get CancelledError, new ones Overloaded."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
