"""The limit tables in a PostgreSQL store (its schema version 2): the same SQL as SQLite's (`sql.py`,
`?` placeholders translated), one connection per thread and process.

A claim is atomic across processes and machines: it runs in one transaction that first locks the rows of
the limits it names (`SELECT ... ORDER BY name FOR UPDATE`: in one order, so two claims never deadlock),
and only then counts their slots. Under READ COMMITTED each statement sees what was committed before
it, so a claim that waited for another's lock counts the slots that one took: two processes never both
take the last slot. A lock held longer than `LOCK_TIMEOUT_MS` (or a deadlock with a release) makes the
attempt `Busy`: the caller tries again later, as with SQLite's write lock."""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from .._exceptions import ConcurrencySlotAcquisitionError
from .._store.postgres_base import Shared, advice, connect, describe, forget_in_child, is_connection_error, redact
from .db import _INHERITED, Busy, LimitsDB, _gate

T = TypeVar("T")
LOCK_TIMEOUT_MS = 250  # one attempt waits at most this long for another claim's lock on a limit row (it
# runs on the caller's thread, an event loop's too: longer waits happen between attempts, with backoff)
_lock = threading.Lock()
_BUSY_STATES = frozenset({"40001", "40P01", "55P03"})  # serialization failure, deadlock, lock timeout


class PgConnection(Shared):
    """A psycopg connection (autocommit) that runs `sql.py`'s statements: `?` placeholders, SQLite's
    `BEGIN IMMEDIATE` as `BEGIN`, and the claim's row locks (`for_update`)."""

    for_update = " FOR UPDATE"

    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self.pid = os.getpid()

    def __del__(self, _getpid: Callable[[], int] = os.getpid) -> None:  # (`os` may be gone at shutdown)
        """A thread that ended (its thread-local is gone) closes its connection: none is left open on the
        server. Only in the process that opened it (a forked child's copies are forgotten, never closed)."""
        if self.pid == _getpid():
            try:  # noqa: SIM105 (not contextlib: module globals may be gone at shutdown)
                self.conn.close()
            except Exception:
                pass

    def execute(self, sql: str, params: Any = ()) -> Any:
        if sql == "BEGIN IMMEDIATE":
            sql = "BEGIN"
        return super().execute(sql, params)

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return bool(self.conn.info.transaction_status != TransactionStatus.IDLE)


class PgLimitsDB(LimitsDB):
    """The limit tables in the PostgreSQL database at `url` (created by the store's migrations)."""

    def __init__(self, url: str) -> None:
        self.path = None
        self.url = url
        self.label = f"the PostgreSQL store {redact(url)}"
        self._local = threading.local()
        self._keep = None
        self._opened: weakref.WeakSet[PgConnection] = weakref.WeakSet()  # every live thread's (for a fork)

    def _connect(self) -> Any:
        conn: PgConnection | None = getattr(self._local, "db", None)
        if conn is not None and conn.conn.closed:
            conn = self._local.db = None
        if conn is None:
            raw = connect(self.url)
            raw.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
            conn = self._local.db = PgConnection(raw)
            with _lock:
                self._opened.add(conn)
        return conn

    def attempt(self, op: Callable[[Any], T]) -> T:
        try:
            with _gate:
                conn = self._connect()
                try:
                    return op(conn)
                except BaseException:
                    if not conn.conn.closed and conn.in_transaction:
                        with contextlib.suppress(Exception):
                            conn.conn.execute("ROLLBACK")
                    raise
        except (ConcurrencySlotAcquisitionError, ValueError, TypeError):
            raise
        except ImportError as exc:
            raise ConcurrencySlotAcquisitionError(str(exc)) from None
        except Exception as exc:
            if getattr(exc, "sqlstate", None) in _BUSY_STATES:
                raise Busy(describe(exc)) from None
            if is_connection_error(exc):
                self._drop()
            raise self._error(exc) from exc

    def _drop(self) -> None:
        conn = getattr(self._local, "db", None)
        self._local.db = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.conn.close()

    def _error(self, exc: BaseException) -> ConcurrencySlotAcquisitionError:
        hint = advice(exc)
        if getattr(exc, "sqlstate", None) == "42P01":  # no such table: a store created by an older asyncflow
            hint = "The store's schema predates concurrency limits: run `asyncflow store upgrade`."
        return ConcurrencySlotAcquisitionError(f"Cannot use the concurrency limits in {self.label}: "
                                               f"{describe(exc)}. {hint}")

    def forget_in_child(self) -> None:
        """(in a forked child) The parent's connections are the parent's: never used, never closed here."""
        for conn in list(self._opened):
            forget_in_child(conn.conn)
            _INHERITED.append(conn)  # (the parent's: kept, never closed here)
        self._opened = weakref.WeakSet()
        self._local = threading.local()

    def close(self) -> None:
        """Close every connection this process opened to the tables (the store is going away). A thread
        that uses one meanwhile (the lease thread) finishes its statement first; its next attempt opens
        a new connection."""
        with _lock:
            opened, self._opened = list(self._opened), weakref.WeakSet()
        for conn in opened:  # (another thread may be using it: wait for its statement, never close under it)
            with conn.conn.lock, contextlib.suppress(Exception):
                conn.conn.close()
        self._local = threading.local()
