"""Where the limit tables are, and how a thread reaches them.

The tables live in the process's store: the SQLite store's file (so every process with the same
ASYNCFLOW_HOME shares them), or, with `ASYNCFLOW_STORE=memory`, an in-memory database private to
this process, or the PostgreSQL store's database (`pg.py`: every machine that records there shares
them).

Fork safety, as in the SQLite broker: each thread has its own connection; every call into SQLite
passes the fork gate (`_fork.Gate`) and waits at most `BUSY_MS` inside it for another connection's
lock; longer waits happen outside, between attempts (`Busy` tells the caller to try again later)."""

from __future__ import annotations

import itertools
import os
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from .. import _fork
from .._exceptions import ConcurrencySlotAcquisitionError
from .schema import LIMITS_SCHEMA

T = TypeVar("T")
BUSY_MS = 20  # one attempt waits this long for another connection's write lock (inside SQLite, the gate)
MANAGE_WAIT_SECONDS = 30.0  # management calls (the CLI, create/update/delete) retry this long in all

_gate = _fork.Gate()
_INHERITED: list[Any] = []  # a forked child's copies of its parent's connections: never used
_databases: dict[str, LimitsDB] = {}
_by_memory_store: weakref.WeakKeyDictionary[Any, LimitsDB] = weakref.WeakKeyDictionary()
_memory_ids = itertools.count()
_lock = threading.Lock()


class Busy(Exception):
    """Another connection held the database's write lock for the whole attempt: try again later."""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class LimitsDB:
    """The limit tables in one database: `path` (a store file) or a private in-memory database."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.label = path or "this process's memory (ASYNCFLOW_STORE=memory)"
        self._local = threading.local()
        self._keep: sqlite3.Connection | None = None
        if path is None:  # a named in-memory database lives while one connection to it is open
            self._uri = f"file:asyncflow-limits-{os.getpid()}-{next(_memory_ids)}?mode=memory&cache=shared"
            with _gate:
                self._keep = sqlite3.connect(self._uri, uri=True, isolation_level=None, check_same_thread=False)
                for statement in LIMITS_SCHEMA:
                    self._keep.execute(statement)

    def __repr__(self) -> str:
        return f"LimitsDB({self.label!r})"

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection (called inside the gate)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "pid", None) != os.getpid():
            if self.path is None:
                db = sqlite3.connect(self._uri, uri=True, timeout=BUSY_MS / 1000, isolation_level=None,
                                     check_same_thread=False)
            else:
                db = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, isolation_level=None, check_same_thread=False)
            self._local.db, self._local.pid = db, os.getpid()
        return db

    def attempt(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """One short attempt of `op` inside the fork gate; raises `Busy` if the lock stayed taken."""
        try:
            with _gate:
                return op(self._connect())
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise Busy(str(exc)) from None
            raise self._error(exc) from exc
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc

    def run(self, op: Callable[[sqlite3.Connection], T], wait: float = MANAGE_WAIT_SECONDS) -> T:
        """`op`, retried (waiting outside SQLite) while another connection holds the lock, up to `wait` s."""
        deadline = time.monotonic() + wait
        delay = 0.002
        while True:
            try:
                return self.attempt(op)
            except Busy:
                if time.monotonic() >= deadline:
                    raise ConcurrencySlotAcquisitionError(
                        f"The concurrency limits in {self.label} stayed locked by another process for "
                        f"{wait:g} s; try again.") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _error(self, exc: BaseException) -> ConcurrencySlotAcquisitionError:
        return ConcurrencySlotAcquisitionError(
            f"Cannot use the concurrency limits in {self.label}: {type(exc).__name__}: {exc}. Check that the "
            f"store's file is writable by this user and the disk is not full.")


def _once(cache: Any, key: Any, make: Any) -> Any:
    """`cache[key]`, made by `make(key)` the first time (by one thread only)."""
    db = cache.get(key)
    if db is None:
        with _lock:
            db = cache.get(key)
            if db is None:
                db = cache[key] = make(key)
    return db


def for_store(store: Any) -> LimitsDB | None:
    """The limit tables of `store`: its SQLite file, or a private in-memory database for a memory
    store, its PostgreSQL database; None for a store that has none."""
    from .._store.memory import MemoryStore
    from .._store.sqlite import SQLiteStore

    postgres = sys.modules.get("asyncflow._store.postgres")  # (imported already if the store is one)

    if isinstance(store, SQLiteStore):
        return _once(_databases, str(store.path), LimitsDB)
    if postgres is not None and isinstance(store, postgres.PostgresStore):
        from .pg import PgLimitsDB

        return _once(_databases, store.url, PgLimitsDB)
    if isinstance(store, MemoryStore):
        return _once(_by_memory_store, store, lambda _: LimitsDB(None))
    return None


def current() -> LimitsDB | None:
    """The limit tables of the process's store (None: a store without them)."""
    from .._store import get_store

    return for_store(get_store())


def current_or_raise(store: Any = None) -> LimitsDB:
    """The limit tables of `store` (default: the process's store), or an error saying which stores have them."""
    if store is None:
        from .._store import get_store

        store = get_store()
    db = for_store(store)
    if db is None:
        raise ConcurrencySlotAcquisitionError(
            f"Concurrency limits are kept in the SQLite or PostgreSQL store (or in memory), and this process "
            f"records into {store!r}, which has no limit tables. Use one of those stores for runs that "
            f"need concurrency limits (unset ASYNCFLOW_STORE for the SQLite store).")
    return db


def _reset_in_child() -> None:
    """A connection opened before a fork is never used in the child, not even to be closed (SQLite's
    rule): the forking thread's connections are kept here; the child opens its own. A memory store's
    limits are the parent's: the child starts with none."""
    global _lock
    for db in list(_databases.values()):
        forget = getattr(db, "forget_in_child", None)
        if forget is not None:  # PostgreSQL: the parent's connections, in every thread
            forget()
            continue
        inherited = getattr(db._local, "db", None)
        if inherited is not None:
            _INHERITED.append(inherited)
        db._local = threading.local()
    for db in list(_by_memory_store.values()):
        for inherited in (getattr(db._local, "db", None), db._keep):
            if inherited is not None:
                _INHERITED.append(inherited)
    _by_memory_store.clear()
    _lock = threading.Lock()
    _gate.reset()


_fork.register("concurrency limits", reset_in_child=_reset_in_child, before=_gate.close, after_in_parent=_gate.open)
