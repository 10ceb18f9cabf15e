"""A least-recently-used cache bounded by bytes, shared by every session of one server.

Why bytes and not entries: one cached trace of the step-through is 0.1 MiB for the first-look
preset and ~43 MiB at the largest allowed grid (L = 4096, D = 256, no mask: 7396 steps),
so "16 entries" means anything from 2 MiB to 690 MiB. ``ByteLRU`` keeps the total of its
entries' ``approx_bytes`` under ``max_bytes`` by evicting the least recently used ones.

* Thread-safe: Streamlit runs each browser session in its own thread. Two sessions that ask
  for the same missing key wait for one ``make`` call instead of computing it twice (as
  ``st.cache_resource`` does); different keys are made in parallel.
* The newest entry always stays, even when it alone exceeds ``max_bytes``: otherwise a
  session whose trace is too big for the budget would recompute it on every step click.
  The bound is thus ``max(max_bytes, largest single entry)``.
* An evicted value lives on only while a running script still holds it (a local variable);
  callers must not keep values in session state (that would be a private copy per session
  once the cache lets go of it), but their keys.

``approx_bytes`` is a deep ``sys.getsizeof``: arrays by their buffers, containers,
dataclasses and objects' ``__dict__`` walked once each (shared objects counted once).
"""
from __future__ import annotations

import dataclasses
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np


def approx_bytes(obj: Any) -> int:
    """Bytes held by ``obj`` and everything it references (each object counted once)."""
    seen: set[int] = set()
    total = 0
    stack = [obj]
    while stack:
        x = stack.pop()
        if id(x) in seen or x is None or isinstance(x, type):
            continue
        seen.add(id(x))
        if isinstance(x, np.ndarray):
            # a view's getsizeof counts only its header: count the buffer it sees, once
            total += sys.getsizeof(x)
            if x.base is not None:
                stack.append(x.base)
            elif x.dtype == object:
                stack.extend(x.ravel().tolist())
            continue
        total += sys.getsizeof(x)
        if isinstance(x, (str, bytes, bytearray, int, float, bool, complex)):
            continue
        if isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, (list, tuple, set, frozenset)):
            stack.extend(x)
        elif dataclasses.is_dataclass(x):
            stack.extend(getattr(x, f.name) for f in dataclasses.fields(x))
            if hasattr(x, "__dict__"):
                total += sys.getsizeof(x.__dict__)
        elif hasattr(x, "__dict__"):
            stack.append(x.__dict__)
    return total


@dataclasses.dataclass
class CacheStats:
    entries: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int


class ByteLRU:
    """``get(key, make)``: the cached value of ``key``, made by ``make()`` when missing."""

    def __init__(self, max_bytes: int, size_of: Callable[[Any], int] = approx_bytes):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an integer >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()  # oldest first
        self._bytes = 0
        self._lock = threading.Lock()  # guards everything above and the counters
        self._making: dict[Hashable, threading.Lock] = {}  # key -> lock of its one maker
        self._hits = self._misses = self._evictions = 0

    def _lookup(self, key: Hashable) -> tuple[bool, Any]:
        """(found, value), marking it recently used; call with ``_lock`` held."""
        hit = self._items.get(key)
        if hit is None:
            return False, None
        self._items.move_to_end(key)
        self._hits += 1
        return True, hit[0]

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        with self._lock:
            found, value = self._lookup(key)
            if found:
                return value
            maker = self._making.setdefault(key, threading.Lock())
        with maker:  # one maker per key; the others wait here, then find its value
            with self._lock:
                found, value = self._lookup(key)
                if found:
                    return value
                self._misses += 1
            try:
                value = make()
                nbytes = self._size_of(value)
                with self._lock:
                    self._put(key, value, nbytes)
            finally:
                with self._lock:
                    if self._making.get(key) is maker:
                        del self._making[key]
        return value

    def _put(self, key: Hashable, value: Any, nbytes: int) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        self._items[key] = (value, nbytes)
        self._bytes += nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, (_, b) = self._items.popitem(last=False)
            self._bytes -= b
            self._evictions += 1

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._items), self._bytes, self.max_bytes, self._hits,
                              self._misses, self._evictions)
