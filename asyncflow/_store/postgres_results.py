"""Persisted results and cache records in PostgreSQL (the `results` table of the PostgreSQL store's schema),
so that a cache hit on one machine serves every other: a result storage of `_results.py` beside the local
(or shared) path.

A record is the same bytes as a record file (`_results.ResultStore.encode`: checksummed header, then the
serialized value), one row per key, written in one statement (an upsert: atomic, like a rename). Records
larger than `max_bytes` (ASYNCFLOW_RESULT_STORAGE_MAX_BYTES) are refused with a clear error: a database
is the place for small results; large ones belong on a shared path. Key locks (SERIALIZABLE isolation)
are PostgreSQL advisory locks, held on a connection of their own: they span machines, and the server
releases them if the process dies.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.to_thread

from .._exceptions import ResultWriteError
from .postgres_base import check_url, connect, describe, is_connection_error, redact

DEFAULT_MAX_BYTES = 1024 * 1024
_SCHEMA_LOCK = 0x6173796E63726573


class PostgresResults:
    """Result records in a PostgreSQL database (see the module's docstring); one per URL and process."""

    def __init__(self, url: str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.url = check_url(url)
        self.safe_url = redact(self.url)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._conn: Any = None
        self._idle: list[Any] = []  # connections for key locks, kept for the next lock
        self._ready = False

    def __repr__(self) -> str:
        return f"PostgresResults({self.safe_url!r})"

    def __str__(self) -> str:
        return f"the PostgreSQL result storage {self.safe_url}"

    def where(self, key: str) -> str:
        """A record's location, for messages."""
        return f"{self.safe_url} (results, key {key!r})"

    # -- statements --------------------------------------------------------------------------------------
    def _execute(self, sql: str, params: Any = ()) -> Any:
        with self._lock:
            for attempt in (1, 2):
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self.url)
                    self._ready = self._ready or self._prepare(self._conn)
                try:
                    return self._conn.execute(sql, params)
                except Exception as exc:
                    if attempt == 1 and is_connection_error(exc):
                        self._conn = None
                        continue
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _prepare(conn: Any) -> bool:
        """The table (the store's schema has it; a database used only for results gets it here)."""
        if conn.execute("SELECT to_regclass('results')").fetchone()[0] is None:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, data BYTEA NOT NULL, "
                             "expiration DOUBLE PRECISION, task TEXT, size BIGINT NOT NULL, "
                             "written DOUBLE PRECISION NOT NULL)")
        return True

    # -- the result storage interface (`_results.ResultStore` calls these) ----------------------------------
    def read_bytes(self, key: str) -> bytes | None:
        """The record's bytes, or None if there is none; OSError-like errors propagate (a miss with a warning)."""
        row = self._execute("SELECT data FROM results WHERE key = %s", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def write_bytes(self, key: str, data: bytes, expiration: float | None, task_name: str) -> None:
        if len(data) > self.max_bytes:
            raise ResultWriteError(self.where(key), (
                f"The result of task {task_name!r} is {len(data):,} bytes, over the {self.max_bytes:,} bytes "
                f"{self} keeps (ASYNCFLOW_RESULT_STORAGE_MAX_BYTES). The function ran; this attempt counts as failed "
                f"(retries apply). Raise the limit, or keep large results on a path every machine mounts "
                f"(ASYNCFLOW_RESULT_STORAGE=local with ASYNCFLOW_LOCAL_STORAGE_PATH on a shared file system, or the "
                f"task's result_storage), or turn persistence off for this task (persist_result=False)."))
        try:
            self._execute(
                "INSERT INTO results (key, data, expiration, task, size, written) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (key) DO UPDATE SET data = excluded.data, expiration = excluded.expiration, "
                "task = excluded.task, size = excluded.size, written = excluded.written",
                (key, data, expiration, task_name, len(data), time.time()))
        except ResultWriteError:
            raise
        except Exception as exc:
            raise ResultWriteError(self.where(key), (
                f"The task's result could not be written to {self}: {describe(exc)}. The function ran; this "
                f"attempt counts as failed (retries apply). Check the database, or turn persistence off for this "
                f"task (persist_result=False).")) from exc

    def remove(self, key: str) -> None:
        with contextlib.suppress(Exception):
            self._execute("DELETE FROM results WHERE key = %s", (key,))

    def list_records(self) -> list[dict[str, Any]]:
        rows = self._execute("SELECT key, task, expiration, size FROM results ORDER BY key").fetchall()
        return [{"key": key, "task": task, "expiration": expiration, "size": size, "path": self.where(key)}
                for key, task, expiration, size in rows]

    def clear_records(self, *, task: str | None = None, expired_only: bool = False, now: float) -> int:
        where, params = [], []  # type: list[str], list[Any]
        if task is not None:
            where.append("task = %s")
            params.append(task)
        if expired_only:
            where.append("expiration IS NOT NULL AND expiration <= %s")
            params.append(now)
        sql = "DELETE FROM results" + (" WHERE " + " AND ".join(where) if where else "")
        return int(self._execute(sql, params).rowcount)

    def key_lock(self, key: str) -> AdvisoryLock:
        return AdvisoryLock(self, key)

    # -- connections for advisory locks ---------------------------------------------------------------------
    def _lock_connection(self) -> Any:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
        return connect(self.url)

    def _return_connection(self, conn: Any) -> None:
        with self._lock:
            if len(self._idle) < 8 and not conn.closed:
                self._idle.append(conn)
                return
        with contextlib.suppress(Exception):
            conn.close()


def _lock_id(key: str) -> int:
    """A key's advisory lock number (64 bits of its SHA-256: another key shares it with odds of 2**-64)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


class AdvisoryLock:
    """An exclusive lock on a result key between every process of every machine (`_results.KeyLock`'s
    interface): a session advisory lock on a connection held until `release`."""

    def __init__(self, storage: PostgresResults, key: str) -> None:
        self.storage = storage
        self.key = key
        self._id = _lock_id(key)
        self._conn: Any = None

    def acquire(self) -> None:
        conn = self.storage._lock_connection()
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (self._id,))
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        self._conn = conn

    async def acquire_async(self) -> None:
        """Without holding a thread while another process holds the key: try, sleep, try again."""
        conn = await anyio.to_thread.run_sync(self.storage._lock_connection)
        delay = 0.001
        try:
            while not await anyio.to_thread.run_sync(self._try, conn):
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.05)
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        self._conn = conn

    def _try(self, conn: Any) -> bool:
        return bool(conn.execute("SELECT pg_try_advisory_lock(%s)", (self._id,)).fetchone()[0])

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (self._id,))
        except Exception:  # a broken connection: the server released the lock with the session
            with contextlib.suppress(Exception):
                conn.close()
            return
        self.storage._return_connection(conn)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    @contextlib.asynccontextmanager
    async def held_async(self) -> AsyncIterator[None]:
        await self.acquire_async()
        try:
            yield
        finally:
            self.release()


_storages: dict[tuple[str, int], PostgresResults] = {}
_storages_lock = threading.Lock()


def storage_for(url: str, max_bytes: int = DEFAULT_MAX_BYTES) -> PostgresResults:
    """The process's result storage for this database (one per URL and limit: equal roots are identical)."""
    key = (url, max_bytes)
    with _storages_lock:
        found = _storages.get(key)
        if found is None:
            found = _storages[key] = PostgresResults(url, max_bytes)
    return found


def _reset_in_child() -> None:
    """A child must not use its parent's connections (see postgres_base.forget_in_child)."""
    from .postgres_base import forget_in_child

    global _storages_lock
    _storages_lock = threading.Lock()
    for storage in list(_storages.values()):
        for conn in [storage._conn, *storage._idle]:
            if conn is not None:
                forget_in_child(conn)
                _INHERITED.append(conn)
        storage._conn, storage._idle, storage._lock = None, [], threading.Lock()


_INHERITED: list[Any] = []


def _register_fork_reset() -> None:
    from .. import _fork

    _fork.register("postgres results", reset_in_child=_reset_in_child)


_register_fork_reset()
