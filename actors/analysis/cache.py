"""A bounded LRU cache for analysis results, keyed by (provider, paragraph hash, rule-set version)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

CacheKey = tuple[str, str, str]


def cache_key(provider: str, paragraph_hash: str, version: str) -> CacheKey:
    """Key for one paragraph's result; bumping ``version`` invalidates old entries without a flush."""
    return (provider, paragraph_hash, version)


class LRUCache(Generic[K, V]):
    """Least-recently-used mapping holding at most ``maxsize`` entries, or with ``weigh``, entries
    weighing at most ``maxsize`` in all (the most recent one is kept whatever it weighs).

    Locked: an engine analyses big texts on a worker thread while its loop serves small ones.
    """

    def __init__(self, maxsize: int = 10_000, *, weigh: Callable[[V], int] | None = None) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._weigh = weigh
        self._weight = 0
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
            if self._weigh is None:
                self._data[key] = value
                self._data.move_to_end(key)
                while len(self._data) > self.maxsize:
                    self._data.popitem(last=False)
                return
            if key in self._data:
                self._weight -= self._weigh(self._data[key])
            self._data[key] = value
            self._data.move_to_end(key)
            self._weight += self._weigh(value)
            while self._weight > self.maxsize and len(self._data) > 1:
                self._weight -= self._weigh(self._data.popitem(last=False)[1])

    def discard(self, key: K) -> None:
        with self._lock:
            value = self._data.pop(key, None)
            if value is not None and self._weigh is not None:
                self._weight -= self._weigh(value)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._weight = 0
