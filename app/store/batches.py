"""Splitting upserts into requests that respect both a point count and Qdrant's request size limit.

Qdrant rejects request bodies over ``service.max_request_size_mb`` (32 MiB by default), so
sizes are estimated from above from the JSON the REST client sends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from app.errors import InvalidInput

QDRANT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
# Headroom under the server limit for the request envelope and estimate slack.
DEFAULT_MAX_REQUEST_BYTES = 30 * 1024 * 1024

# Longest JSON float a float32 value can take, with its comma: "-1.2345678901234567e-05,".
_BYTES_PER_FLOAT = 24
# {"id":"<36-char uuid>","vector":[],"payload":} plus separators.
_POINT_OVERHEAD_BYTES = 96
_REQUEST_OVERHEAD_BYTES = 64


def estimate_point_bytes(dim: int, payload: Mapping[str, Any]) -> int:
    """An upper bound on the JSON size of one point with a ``dim``-float vector and ``payload``.

    ``ensure_ascii=True`` is never shorter than the UTF-8 encoding the client may send instead;
    NaN and infinity raise ValueError, as the server would refuse them.
    """
    payload_bytes = len(
        json.dumps(payload, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    )
    return _POINT_OVERHEAD_BYTES + dim * _BYTES_PER_FLOAT + payload_bytes


def plan_batches(sizes: Sequence[int], *, max_points: int, max_bytes: int) -> Iterator[range]:
    """Consecutive index ranges over points of the given estimated ``sizes``.

    Each range holds at most ``max_points`` points and at most ``max_bytes`` estimated bytes
    (request envelope included). A single point over ``max_bytes`` is refused: the server would
    refuse it too, and splitting cannot help.
    """
    if max_points < 1:
        raise InvalidInput(f"max_points must be at least 1, got {max_points}")
    budget = max_bytes - _REQUEST_OVERHEAD_BYTES
    start = 0
    used = 0
    for index, size in enumerate(sizes):
        if size > budget:
            raise InvalidInput(
                f"point #{index} needs about {size} bytes, over the {max_bytes}-byte request limit; "
                "shorten its text or metadata"
            )
        if index > start and (index - start >= max_points or used + size > budget):
            yield range(start, index)
            start, used = index, 0
        used += size
    if start < len(sizes):
        yield range(start, len(sizes))
