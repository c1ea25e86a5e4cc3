"""Two lock managers with Prefect's protocol: one for the threads and coroutines of this process
(`MemoryLockManager`), one for every process that sees a directory (`FileSystemLockManager`, an
operating-system file lock per key that is released if its process dies)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import anyio

_POLL = 0.005


@runtime_checkable
class LockManager(Protocol):
    def acquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                     hold_timeout: float | None = None) -> bool: ...

    def release_lock(self, key: str, holder: str) -> None: ...

    def is_locked(self, key: str) -> bool: ...

    def is_lock_holder(self, key: str, holder: str) -> bool: ...


def _check(key: Any, holder: Any, acquire_timeout: Any, hold_timeout: Any = None) -> None:
    if not isinstance(key, str) or not isinstance(holder, str):
        raise TypeError(f"A lock's key and holder are strings; got key={key!r}, holder={holder!r}.")
    for name, value in (("acquire_timeout", acquire_timeout), ("hold_timeout", hold_timeout)):
        if value is not None and (not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"{name} must be a number of seconds >= 0, or None; got {value!r}.")


class _Polling:
    """acquire/aacquire/wait in terms of one non-blocking attempt (`_try`) and `is_locked`."""

    def _try(self, key: str, holder: str, hold_timeout: float | None) -> bool:
        raise NotImplementedError

    def is_locked(self, key: str) -> bool:
        raise NotImplementedError

    def acquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                     hold_timeout: float | None = None) -> bool:
        """Take the lock on `key` for `holder`, waiting at most `acquire_timeout` seconds (None: as long
        as it takes); False if it could not be had in time. A holder that has it already keeps it."""
        _check(key, holder, acquire_timeout, hold_timeout)
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while not self._try(key, holder, hold_timeout):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)
        return True

    async def aacquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                            hold_timeout: float | None = None) -> bool:
        """`acquire_lock` that waits without holding a thread."""
        _check(key, holder, acquire_timeout, hold_timeout)
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while not self._try(key, holder, hold_timeout):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await anyio.sleep(_POLL)
        return True

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        """Wait until nobody holds `key`; False if it is still held after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (Prefect's name)
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await anyio.sleep(_POLL)
        return True


class MemoryLockManager(_Polling):
    """Locks shared by the threads and coroutines of this process (one manager per process, as in
    Prefect: `MemoryLockManager()` is always the same object). `hold_timeout` frees a lock its holder
    kept too long."""

    _instance: MemoryLockManager | None = None
    _guard = threading.Lock()

    def __new__(cls) -> MemoryLockManager:
        with cls._guard:
            if cls._instance is None:
                instance = super().__new__(cls)
                instance._locks = {}
                instance._mutex = threading.Lock()
                cls._instance = instance
            return cls._instance

    _locks: dict[str, tuple[str, float | None]]
    _mutex: threading.Lock

    def _current(self, key: str) -> str | None:
        held = self._locks.get(key)
        if held is None:
            return None
        holder, expires = held
        if expires is not None and time.monotonic() >= expires:
            del self._locks[key]
            return None
        return holder

    def _try(self, key: str, holder: str, hold_timeout: float | None) -> bool:
        with self._mutex:
            current = self._current(key)
            if current is not None and current != holder:
                return False
            self._locks[key] = (holder, None if hold_timeout is None else time.monotonic() + hold_timeout)
            return True

    def release_lock(self, key: str, holder: str) -> None:
        with self._mutex:
            if self._current(key) != holder:
                raise ValueError(f"No lock held by {holder!r} for the key {key!r}: release what you acquired, "
                                 f"with the same holder.")
            del self._locks[key]

    def is_locked(self, key: str) -> bool:
        with self._mutex:
            return self._current(key) is not None

    def is_lock_holder(self, key: str, holder: str) -> bool:
        with self._mutex:
            return self._current(key) == holder


class FileSystemLockManager(_Polling):
    """A lock per key, `<lock_files_directory>/<key>.lock`, shared by every process that sees the
    directory: an operating-system file lock (flock), released when its holder releases it or its
    process dies. A dead holder is the case `hold_timeout` guards against in Prefect, so here it only
    has to be a valid number; a live holder keeps the lock until it releases it."""

    def __init__(self, lock_files_directory: str | Path) -> None:
        from .._settings import expand_home

        try:
            self.lock_files_directory = Path(expand_home(lock_files_directory))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"lock_files_directory must be a directory path; got {lock_files_directory!r} "
                            f"({exc}).") from None
        self._held: dict[str, tuple[str, Any]] = {}
        self._mutex = threading.Lock()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileSystemLockManager) and other.lock_files_directory == self.lock_files_directory

    def __hash__(self) -> int:
        return hash(self.lock_files_directory)

    def _path(self, key: str) -> Path:
        if not key or "/" in key or "\\" in key or key in (".", ".."):
            raise ValueError(f"A lock key must be a file name (no '/'); got {key!r}.")
        return self.lock_files_directory / f"{key}.lock"

    def _try(self, key: str, holder: str, hold_timeout: float | None) -> bool:
        from .._results import KeyLock

        with self._mutex:
            held = self._held.get(key)
            if held is not None:
                return held[0] == holder
            lock = KeyLock(self._path(key))
            if not lock.try_acquire():
                return False
            self._held[key] = (holder, lock)
            return True

    def release_lock(self, key: str, holder: str) -> None:
        with self._mutex:
            held = self._held.get(key)
            if held is None or held[0] != holder:
                raise ValueError(f"No lock held by {holder!r} for the key {key!r}: release what you acquired, "
                                 f"with the same holder.")
            del self._held[key]
            held[1].release()

    def is_locked(self, key: str) -> bool:
        from .._results import KeyLock

        with self._mutex:
            if key in self._held:
                return True
        probe = KeyLock(self._path(key))
        if probe.try_acquire():
            probe.release()
            return False
        return True

    def is_lock_holder(self, key: str, holder: str) -> bool:
        with self._mutex:
            held = self._held.get(key)
            return held is not None and held[0] == holder
