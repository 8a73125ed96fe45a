"""A real `cdeq worker` whose first upsert (per marker file) writes half its points, then
hangs: the test SIGKILLs that pool process mid-batch. Only the timing is staged; the worker,
broker, model and store are the real ones."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from app.store import QdrantStore

MARKER = Path(os.environ["CDEQ_TEST_KILL_MARKER"])
# Only upserts into this physical collection hang (e.g. a rebuild's target); default: any.
TARGET = os.environ.get("CDEQ_TEST_KILL_TARGET")
_real_upsert = QdrantStore.upsert


def upsert_then_hang(self: QdrantStore, physical: str, points: list) -> None:  # type: ignore[type-arg]
    if not MARKER.exists() and TARGET in (None, physical):
        half = len(points) // 2
        _real_upsert(self, physical, points[:half])
        MARKER.write_text(str(os.getpid()))
        time.sleep(300)  # killed here, with half the batch written
    _real_upsert(self, physical, points)


QdrantStore.upsert = upsert_then_hang  # type: ignore[method-assign]

if __name__ == "__main__":
    from app.cli import main

    sys.exit(main(["worker", "--pool", "prefork", "--concurrency", "1", "--loglevel", "WARNING"]))
