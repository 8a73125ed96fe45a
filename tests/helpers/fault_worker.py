"""A real `cdeq worker` (prefork, one pool process) with one staged fault, chosen by
CDEQ_TEST_FAULT. Only the fault is staged; the worker, broker, model and store are real.

- `hang_once`: the first upsert (per marker file CDEQ_TEST_MARKER) writes half its points,
  writes the pool process's pid to the marker, then hangs: the test kills the whole worker.
- `slow`: every upsert waits 0.4 s first, so a fault can land while a batch is in flight.
- `poison`: a batch holding a text with "POISON" kills its pool process (SIGKILL), as a
  segfault or the kernel's OOM killer would, on every delivery.
- `stuck`: a batch holding a text with "STUCK" ignores the soft time limit and never ends, as
  a forward pass stuck in native code would; only the hard time limit stops it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from app.store import QdrantStore

FAULT = os.environ.get("CDEQ_TEST_FAULT", "")
_real_upsert = QdrantStore.upsert


def _texts(points: Any) -> list[str]:
    return [p.text for p in points]


def faulty_upsert(self: QdrantStore, physical: str, points: list[Any]) -> None:
    if FAULT == "hang_once":
        marker = Path(os.environ["CDEQ_TEST_MARKER"])
        if not marker.exists():
            _real_upsert(self, physical, points[: len(points) // 2])
            marker.write_text(str(os.getpid()))
            time.sleep(300)  # killed here, with half the batch written
    elif FAULT == "slow":
        time.sleep(0.4)
    elif FAULT == "poison" and any("POISON" in t for t in _texts(points)):
        os.kill(os.getpid(), signal.SIGKILL)
    elif FAULT == "stuck" and any("STUCK" in t for t in _texts(points)):
        while True:
            try:
                time.sleep(3600)
            except SoftTimeLimitExceeded:
                continue  # native code would not see it either
    _real_upsert(self, physical, points)


QdrantStore.upsert = faulty_upsert  # type: ignore[method-assign]

if __name__ == "__main__":
    from app.cli import main

    sys.exit(main(["worker", "--pool", "prefork", "--concurrency", "1", "--loglevel", "WARNING"]))
