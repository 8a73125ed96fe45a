"""A thread-safe LRU of single-text results (the query cache of the model server)."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

CacheKey = tuple[str, str, str, str]  # (model fingerprint, context key, input type, text)
CacheEntry = tuple[np.ndarray, int, bool]  # (vector, token count, truncated)


class QueryCache:
    """At most `size` entries; the least recently used goes first. Counts hits and misses."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[CacheKey, CacheEntry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey) -> CacheEntry | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: CacheKey, value: CacheEntry) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def hit_ratio(self) -> float:
        with self._lock:
            seen = self.hits + self.misses
            return self.hits / seen if seen else 0.0

    def __len__(self) -> int:
        return len(self._items)
