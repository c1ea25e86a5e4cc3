"""Result caching by key, in this process.

A task with `cache_key_fn` looks its key up after entering Running; a hit ends the run `Cached`
with the stored result, without calling the function. `cache_expiration` bounds how long a record
is served (on the engine's clock); `refresh_cache=True` recomputes and overwrites.
Persisted results shared between processes, and cache policies, build on this interface.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from .._clock import get_clock

_MISSING = object()


class MemoryCache:
    def __init__(self) -> None:
        self._records: dict[str, tuple[Any, float | None]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        """The cached value, or `MISSING` when there is no unexpired record."""
        record = self._records.get(key)
        if record is None:
            return _MISSING
        value, expires = record
        if expires is not None and get_clock().time() >= expires:
            with self._lock:
                if self._records.get(key) is record:
                    del self._records[key]
            return _MISSING
        return value

    def put(self, key: str, value: Any, expiration: dt.timedelta | None) -> float | None:
        expires = get_clock().time() + expiration.total_seconds() if expiration is not None else None
        with self._lock:
            self._records[key] = (value, expires)
        return expires

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


MISSING = _MISSING
_cache = MemoryCache()


def get_cache() -> MemoryCache:
    return _cache
