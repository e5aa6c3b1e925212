"""A bounded LRU cache for analysis results, keyed by (provider, paragraph hash, rule-set version)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

CacheKey = tuple[str, str, str]


def cache_key(provider: str, paragraph_hash: str, version: str) -> CacheKey:
    """Key for one paragraph's result; bumping ``version`` invalidates old entries without a flush."""
    return (provider, paragraph_hash, version)


class LRUCache(Generic[K, V]):
    """Least-recently-used mapping holding at most ``maxsize`` entries.

    Locked: an engine analyses big texts on a worker thread while its loop serves small ones.
    """

    def __init__(self, maxsize: int = 10_000) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            try:
                value = self._data[key]
            except KeyError:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def discard(self, key: K) -> None:
        with self._lock:
            self._data.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
